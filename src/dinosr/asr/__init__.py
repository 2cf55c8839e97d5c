"""Speech recognition on DinoSR encoders: CTC decoding, transcription, WER/CER, fine-tuned model files.

Submodules are imported directly (``from dinosr.asr.scoring import score``); this package imports nothing
so that the command line and the trainer pull in only what they use.
"""
