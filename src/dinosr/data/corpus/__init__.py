"""Phone-aligned synthetic speech corpus: the generator (`dinosr corpus`) and the bundled corpus.

Layout: docs/DESIGN.md, "Corpus layout". How it is made: docs/corpus.md.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from dinosr.data.corpus.voices import read_base_voices

__all__ = ["bundled_corpus", "read_base_voices"]


def bundled_corpus() -> Path:
    """Return the root directory of the corpus shipped inside the package.

    It holds ``audio/<speaker>/<utt>.flac`` (16 kHz mono, 16-bit), ``train.tsv``/``valid.tsv``
    manifests (split by base voice: ``valid.*`` is every speaker of the voice slt, ``train.*`` the
    speakers of kal, ked, flite-awb and flite-rms), ``.wrd``/``.ltr`` transcripts, ``alignments.tsv``,
    ``speakers.tsv``, ``voices.tsv`` (:func:`read_base_voices`) and ``corpus.json``. Reading it
    needs only soundfile.

    Note:
        The manifests' first line is the root where the corpus was generated; readers should
        resolve paths relative to the manifest's directory when that root does not exist.
    """
    root = importlib.resources.files("dinosr") / "assets" / "corpus"
    return Path(str(root))
