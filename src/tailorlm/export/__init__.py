"""Export a run: a merged Hugging Face folder, or the method's adapter, checked for parity on disk."""
from .merge import export
from .parity import ParityError

__all__ = ["ParityError", "export"]
