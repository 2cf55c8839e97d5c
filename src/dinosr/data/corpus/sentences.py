"""Sentence sources: a small built-in template grammar, or a user's text file.

The grammar's word lists (several hundred words) were written for this project; they are chosen
so that every one of the 39 ARPAbet phones occurs often, including the rare ones (ZH in
"measure", OY in "noise", UH in "book"). Festival's lexicon and letter-to-sound rules give the
pronunciations, so any English word works.
"""

from __future__ import annotations

import random
import re
from pathlib import Path


def _words(text: str) -> list[str]:
    """Split a whitespace-separated word list (easier to read and edit than a list literal)."""
    return text.split()


NAMES = _words(
    """
anna bob carol david emma frank grace henry irene jack julia kevin laura martin nora oscar
paula quentin rachel simon teresa victor wendy xavier yvonne zachary joyce roy george judy
charlotte sherman thelma vaughn zoe hugo molly
"""
)

ADJECTIVES = _words(
    """
big small old young happy angry quiet noisy bright dark warm cold soft hard quick slow heavy
light red green blue yellow purple orange brown golden silver wooden smooth rough tiny huge
clever foolish gentle brave shy proud lazy busy tired hungry thirsty strange usual unusual
pleasant casual visual loyal royal joyful tough rich poor fresh sharp round square empty full
thick thin deep shallow clean dirty cheap expensive careful wild calm cheerful lovely ugly
"""
)

NOUNS = _words(
    """
cat dog horse mouse bird fish frog goat sheep cow pig rabbit turtle boy girl child woman man
teacher doctor farmer baker sailor soldier singer judge king queen pilot driver student
book table chair window door garden house village city river mountain valley forest island
bridge road street market school church castle palace garage treasure measure vision television
decision collection machine engine toy coin voice noise oil point boat ship train truck bicycle
apple orange cherry cookie cake bread butter cheese sugar honey juice coffee tea milk soup
hat shoe shirt jacket glove ring watch clock lamp candle mirror picture letter message song
story puzzle question answer idea dream journey picnic holiday birthday weather thunder
lightning rain snow wind cloud sun moon star ocean beach wave shell stone rock sand path
wood foot hook cook brook wool bush pencil paper basket bottle kitchen bathroom window
"""
)

VERBS_PAST = _words(
    """
saw found took brought bought sold painted cleaned washed moved pushed pulled carried dropped
lifted opened closed watched heard noticed wanted needed liked loved hated chose joined
visited fixed broke built measured treasured enjoyed destroyed avoided pointed touched caught
threw kicked followed chased thanked judged changed charged checked shared showed thought
borrowed returned described imagined remembered forgot hid shook
"""
)

VERBS_INTRANSITIVE = _words(
    """
laughed smiled cried shouted whispered jumped danced sang slept waited worked played
rested listened arrived left returned walked swam stayed hurried paused
"""
)

ADVERBS = _words(
    """
quickly slowly quietly loudly happily sadly gently carefully usually rarely often always
sometimes suddenly finally early late together again outside inside nearby yesterday today
"""
)

PREPOSITIONS = _words("in on under over near behind beside into through across along around")

NUMBERS = _words("one two three four five six seven eight nine ten eleven twelve twenty thirty")

PLACES = [
    "the garden",
    "the kitchen",
    "the market",
    "the river",
    "the village",
    "the castle",
    "the beach",
    "the forest",
    "the garage",
    "the station",
    "the museum",
    "the library",
    "the harbour",
    "the playground",
]

TIMES = [
    "this morning",
    "last night",
    "every sunday",
    "at noon",
    "before dinner",
    "after school",
    "in the evening",
    "on thursday",
    "in june",
    "during the storm",
]


def vocabulary() -> set[str]:
    """Return every word the built-in grammar can produce (lower case)."""
    words: set[str] = set()
    for group in (NAMES, ADJECTIVES, NOUNS, VERBS_PAST, VERBS_INTRANSITIVE, ADVERBS, PREPOSITIONS, NUMBERS):
        words.update(group)
    for phrase in (*PLACES, *TIMES):
        words.update(phrase.split())
    words.update(_words("the a and but because while then she he they we it was is with"))
    words.update(_words("what where why did does look at there very"))
    return words


def _noun_phrase(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.2:
        return rng.choice(NAMES)
    det = rng.choice(["the", "a", "the", rng.choice(NUMBERS)])
    noun = rng.choice(NOUNS)
    if det not in ("the", "a"):
        noun = noun + "s" if not noun.endswith(("s", "sh", "ch")) else noun + "es"
    if roll < 0.7:
        return f"{det} {rng.choice(ADJECTIVES)} {noun}"
    return f"{det} {noun}"


def _clause(rng: random.Random) -> str:
    subject = _noun_phrase(rng)
    form = rng.randrange(5)
    if form == 0:
        return f"{subject} {rng.choice(VERBS_PAST)} {_noun_phrase(rng)}"
    if form == 1:
        return f"{subject} {rng.choice(VERBS_INTRANSITIVE)} {rng.choice(ADVERBS)}"
    if form == 2:
        verb, obj = rng.choice(VERBS_PAST), _noun_phrase(rng)
        return f"{subject} {verb} {obj} {rng.choice(PREPOSITIONS)} {rng.choice(PLACES)}"
    if form == 3:
        return f"{subject} {rng.choice(VERBS_INTRANSITIVE)} {rng.choice(PREPOSITIONS)} {rng.choice(PLACES)}"
    return f"{subject} was very {rng.choice(ADJECTIVES)} {rng.choice(TIMES)}"


def generate_sentence(rng: random.Random) -> str:
    """Return one sentence from the template grammar, capitalised and punctuated.

    Args:
        rng: the random source (pass ``random.Random(seed)`` for reproducible text).
    """
    form = rng.randrange(10)
    if form < 5:
        text = _clause(rng) + "."
    elif form < 7:
        joiner = rng.choice(["and", "but", "because", "while", "then"])
        text = f"{_clause(rng)}, {joiner} {_clause(rng)}."
    elif form < 8:
        text = f"{rng.choice(TIMES)}, {_clause(rng)}."
    elif form < 9:
        text = f"why did {_noun_phrase(rng)} look at {_noun_phrase(rng)}?"
    else:
        text = f"where is {_noun_phrase(rng)}?"
    return text[0].upper() + text[1:]


def generate_sentences(count: int, *, seed: int) -> list[str]:
    """Return ``count`` sentences from the grammar, reproducible from ``seed``."""
    rng = random.Random(seed)
    return [generate_sentence(rng) for _ in range(count)]


def read_sentences(path: str | Path) -> list[str]:
    """Read one sentence per line from a UTF-8 text file, skipping blank lines."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip()]


def estimate_seconds(sentence: str) -> float:
    """Rough spoken length of a sentence at the default rate (for planning ``--hours``)."""
    return 0.45 + 0.32 * len(re.findall(r"[A-Za-z0-9']+", sentence))
