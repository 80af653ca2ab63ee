"""The findings summary: one line per question of the claims table (a claim of the paper, then each result beyond
it), read from the claims themselves: the verdict at the question's headline setting with its number, interval
and scope (the training budget among it), the verdict at the budget response's largest budget where it was
measured there, and how the question's other settings went."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from poschan.report.claims import ABSTRACT, VERDICTS, Claim

BUDGET_FAMILY = "budget-response"


@dataclass(frozen=True)
class Finding:
    question: str
    beyond: bool  # a result beyond the paper's claims
    headline: Claim  # the setting the line reads
    largest_budget: Claim | None  # the same question at the budget response's largest budget
    tally: dict[str, int]  # verdicts over every setting of the question

    def detail(self) -> str:
        """Everything after the question: verdict, number, scope, then the other settings."""
        h = self.headline
        text = f"{h.verdict} — {_lead(h.measured)}; {h.scope} (run {h.run})."
        if self.largest_budget is not None:
            b = self.largest_budget
            text += f" At the budget response's largest budget: {b.verdict} — {_lead(b.measured)} ({b.scope})."
        settings = sum(self.tally.values())
        if settings > 1:
            text += f" Over all {settings} settings: " + ", ".join(f"{n} {v}" for v, n in self.tally.items() if n) + "."
        return text

    def markdown(self) -> str:
        return f"- **{self.question}**: {self.detail()}"


def _lead(measured: str) -> str:
    """A claim's own statistic: its measurement up to the controls said beside it."""
    return measured.split("; ")[0]


def _headline(rows: Sequence[Claim]) -> Claim:
    """The headline row with the most units (the setting where the verdict is decided), first among equals."""
    marked = [c for c in rows if c.headline] or list(rows)
    return max(marked, key=lambda c: c.units)  # max keeps the first of equal ones


def findings(found: Sequence[Claim]) -> list[Finding]:
    """One finding per question of ``found`` (claims without a question are left to the table): the paper's claims
    first, then the results beyond it, each in the order of its first claim."""
    questions = list(dict.fromkeys(c.question for c in found if c.question))
    out = []
    for q in questions:
        rows = [c for c in found if c.question == q]
        studied = [c for c in rows if c.family != BUDGET_FAMILY] or rows
        budget = [c for c in rows if c.family == BUDGET_FAMILY and c not in studied]
        out.append(Finding(q, not rows[0].source.startswith(ABSTRACT), _headline(studied),
                           budget[-1] if budget else None, {v: sum(c.verdict == v for c in rows) for v in VERDICTS}))
    return sorted(out, key=lambda f: f.beyond)  # stable: each group keeps its order
