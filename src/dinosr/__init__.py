"""dinosr: DinoSR self-supervised speech representations in pure PyTorch."""

__version__ = "0.1.0"
