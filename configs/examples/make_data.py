"""Writes the example tasks' JSONL files (deterministic; run from the repo root):

    python configs/examples/make_data.py

tickets/: support tickets to route to one of four teams; half of them carry the customer's
own (wrong) guess of the team, the bias System 2 Attention removes. orders/: two-step
arithmetic word problems with a numeric answer in units. Train and test never share an
underlying ticket or problem template instance.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent

ISSUES = {
    "Billing": [
        "I was charged twice for my March invoice", "my card was billed after I cancelled the plan",
        "the refund you promised two weeks ago has not arrived", "the invoice shows a price higher than the one on your site",
        "I need a VAT receipt for last month's payment", "my discount code was not applied to the bill",
        "you charged me in euros instead of dollars", "I was billed for a seat we removed in January",
        "the annual plan renewed without the usual reminder and I want my money back",
        "my payment failed but the amount left my bank account", "I paid for premium but the invoice says basic",
        "there is an extra 'service fee' on my statement I never agreed to",
    ],
    "Technical": [
        "the app crashes every time I open the settings page", "the export to CSV button does nothing",
        "sync between my phone and laptop stopped working yesterday", "the dashboard shows a 500 error since the update",
        "uploads larger than 10 MB fail halfway", "search returns no results even for files I can see",
        "notifications arrive hours late on Android", "the API returns a timeout for every request since this morning",
        "dark mode makes all the buttons invisible", "the calendar integration creates every event twice",
        "the desktop app uses all my CPU when idle", "images in shared folders show as broken links",
    ],
    "Account": [
        "I cannot log in because the password reset email never arrives", "I want to change the email address on my profile",
        "please delete my account and all my data", "my two-factor codes stopped working after I changed phones",
        "I need to transfer ownership of the workspace to a colleague", "my account is locked after too many attempts",
        "how do I add a second administrator to our team", "I want to merge my two accounts into one",
        "my username shows someone else's name", "I need to change the company name on the account",
        "the invitation link for my new teammate has expired", "I forgot which email I used to sign up",
    ],
    "Shipping": [
        "my package has shown 'in transit' for ten days", "the parcel arrived with the box crushed and the item broken",
        "I received someone else's order", "the courier left my delivery at the wrong address",
        "I need to change the delivery address of an order that has not shipped", "only two of the three items arrived",
        "the tracking number you sent does not exist", "the delivery was marked as delivered but nothing came",
        "can I pick up my order at the warehouse instead", "my order has not shipped after the promised five days",
        "customs is holding my parcel and asking for a form", "the return label you emailed will not print",
    ],
}
OPENINGS = ["Hi,", "Hello support,", "Good morning.", "Hey there,", "Dear team,"]
CLOSINGS = ["Thanks.", "Please help.", "Any update would be appreciated.", "Regards, Sam", "Thank you!"]
GUESS = "I think this is a question for your {wrong} team, but I'm not sure."


def _split(key: str) -> str:
    return "train" if int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 5 < 3 else "test"


def tickets() -> dict[str, list[dict]]:
    rng = random.Random(7)
    out: dict[str, list[dict]] = {"train": [], "test": []}
    for label, issues in ISSUES.items():
        for i, issue in enumerate(issues):
            split = _split(f"{label}:{i}")
            for variant in ("plain", "wrong_guess"):
                wrong = rng.choice([other for other in ISSUES if other != label])
                parts = [rng.choice(OPENINGS), issue[0].upper() + issue[1:] + "."]
                if variant == "wrong_guess":
                    parts.insert(1, GUESS.format(wrong=wrong.lower()))
                parts.append(rng.choice(CLOSINGS))
                out[split].append({"id": f"{label.lower()}-{i}-{variant}", "input": " ".join(parts), "answer": label,
                                   "variant": variant})
    return out


NAMES = ["Ana", "Ben", "Chloe", "Dev", "Ema", "Farid", "Gita", "Hugo", "Ines", "Jon"]


def _problem(kind: int, rng: random.Random) -> tuple[str, int]:
    name = rng.choice(NAMES)
    if kind == 0:
        p, q = rng.randint(2, 9), rng.randint(2, 9)
        bill = rng.choice([50, 100]) if p * q < 50 else 100
        return (f"A shop sells notebooks at {p} dollars each. {name} buys {q} notebooks and pays with a {bill} dollar "
                f"bill. How much change does {name} get, in dollars?", bill - p * q)
    if kind == 1:
        a, b, c, d = rng.randint(20, 60), rng.randint(2, 15), rng.randint(2, 6), rng.randint(3, 12)
        return (f"{name} has {a} stickers, gives {b} to a friend, then buys {c} packs of {d} stickers each. "
                f"How many stickers does {name} have now?", a - b + c * d)
    if kind == 2:
        v, t, v2, t2 = rng.choice([40, 50, 60, 80]), rng.randint(2, 5), rng.choice([30, 70, 90]), rng.randint(1, 4)
        return (f"A train travels at {v} km per hour for {t} hours, then at {v2} km per hour for {t2} hours. "
                "How many kilometres does it travel in total?", v * t + v2 * t2)
    w, h, d = rng.choice([12, 15, 18, 20, 25]), rng.randint(4, 8), rng.randint(10, 22)
    return (f"{name} earns {w} dollars an hour and works {h} hours a day for {d} days. "
            f"How many dollars does {name} earn in total?", w * h * d)


def orders() -> dict[str, list[dict]]:
    rng = random.Random(11)
    out: dict[str, list[dict]] = {"train": [], "test": []}
    seen: set[str] = set()
    while len(out["train"]) < 72 or len(out["test"]) < 48:
        kind = rng.randrange(4)
        question, answer = _problem(kind, rng)
        split = _split(question)
        if question in seen or len(out[split]) >= {"train": 72, "test": 48}[split]:
            continue
        seen.add(question)
        out[split].append({"id": f"order-{hashlib.sha256(question.encode()).hexdigest()[:10]}", "input": question,
                           "answer": str(answer), "kind": ["change", "stickers", "distance", "wages"][kind]})
    return out


def main() -> None:
    for name, data in (("tickets", tickets()), ("orders", orders())):
        for split, rows in data.items():
            path = HERE / name / f"{split}.jsonl"
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))
            print(f"{path.relative_to(HERE.parent.parent)}: {len(rows)} rows")


if __name__ == "__main__":
    main()
