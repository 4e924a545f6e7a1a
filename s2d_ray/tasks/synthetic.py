"""The paper's symbolic tasks: last-letter concatenation and coin flip."""

from __future__ import annotations

import itertools
import random
from typing import Any

from s2d_ray.errors import S2DError
from s2d_ray.tasks.base import Split, Task, pick, split_of
from s2d_ray.tasks.spec import TaskSpec

FIRST_NAMES = (
    "Elon Bill Steve Larry Sergey Mark Jeff Tim Satya Sundar Ada Grace Alan Linus Guido Barbara "
    "Margaret Katherine Dennis Ken Bjarne James Anita Radia Frances Hedy Marie Rosalind Lise "
    "Emmy Carl Isaac Albert Niels Werner Paul Enrico Richard Maria Sofia Elena Lucas Mateo Noah "
    "Liam Olivia Emma Ava Mia Leo Hugo Ines Omar Yuki Chen Priya Ravi Amara Kofi"
).split()
LAST_NAMES = (
    "Musk Gates Jobs Page Brin Zuckerberg Bezos Cook Nadella Pichai Lovelace Hopper Turing "
    "Torvalds Rossum Liskov Hamilton Johnson Ritchie Thompson Stroustrup Gosling Borg Perlman "
    "Allen Lamarr Curie Franklin Meitner Noether Gauss Newton Einstein Bohr Heisenberg Dirac Fermi "
    "Feynman Garcia Rossi Novak Silva Walker Young Wright Lopez Clark Lewis Hill Green Adams Baker"
).split()


class LastLetter(Task):
    """'Take the last letters of each word in "Elon Musk Bill" and concatenate them.' -> "nkl"."""

    name = "last_letter"
    spec = TaskSpec(name=name, answer="letters", format="Answer with just the concatenated letters, nothing else.")

    def generate(self, n: int, seed: int, split: Split = "train", **params: Any) -> list[dict[str, Any]]:
        k = int(params.get("k", 2))
        rng = random.Random(f"{seed}-{k}")
        names = sorted({*FIRST_NAMES, *LAST_NAMES})
        rows: list[dict[str, Any]] = []
        seen: set[tuple[str, ...]] = set()
        attempts = 0
        while len(rows) < n:
            attempts += 1
            if attempts > 200 * n + 1000:
                raise S2DError(f"task {self.name}: cannot find {n} distinct inputs with k={k} in this split")
            words = tuple(rng.sample(names, k))
            key = " ".join(words)
            if words in seen or (split != "all" and split_of(f"{self.name}:{key}") != split):
                continue
            seen.add(words)
            rows.append(
                {
                    "id": f"last_letter-{'-'.join(words).lower()}",
                    "input": f'Take the last letters of each word in "{key}" and concatenate them.',
                    "answer": "".join(w[-1] for w in words).lower(),
                    "split": split_of(f"{self.name}:{key}"),
                }
            )
        return rows


class CoinFlip(Task):
    """'A coin is heads up. Ada flips the coin. ... Is the coin still heads up?' -> yes/no."""

    name = "coin_flip"
    spec = TaskSpec(name=name, answer="yes_no")

    def generate(self, n: int, seed: int, split: Split = "train", **params: Any) -> list[dict[str, Any]]:
        k = int(params.get("k", 3))
        rng = random.Random(f"{seed}-{k}")
        pool = []
        for people in itertools.combinations(FIRST_NAMES[:16], k):
            for flips in itertools.product((True, False), repeat=k):
                key = ",".join(f"{p}:{int(f)}" for p, f in zip(people, flips))
                if split == "all" or split_of(f"{self.name}:{key}") == split:
                    pool.append((people, flips, key))
        rows = []
        for people, flips, key in pick(rng, pool, n, self.name):
            order = list(zip(people, flips))
            rng.shuffle(order)
            steps = " ".join(f"{p} {'flips' if f else 'does not flip'} the coin." for p, f in order)
            rows.append(
                {
                    "id": f"coin_flip-{key.replace(',', '-').replace(':', '').lower()}",
                    "input": f"A coin is heads up. {steps} Is the coin still heads up?",
                    "answer": "yes" if sum(flips) % 2 == 0 else "no",
                    "split": split_of(f"{self.name}:{key}"),
                }
            )
        return rows
