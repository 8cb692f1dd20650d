"""SegNext model: image encoder, prompt encoder, mask decoder, and the builder."""
from clickseg.model.build import ARCHITECTURES, Architecture, build_segnext
from clickseg.model.io import load_checkpoint
from clickseg.model.segnext import SegNext

__all__ = ["ARCHITECTURES", "Architecture", "SegNext", "build_segnext", "load_checkpoint"]
