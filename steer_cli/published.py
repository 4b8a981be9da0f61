"""The paper's published numbers, as data for ``steer compare --paper``.

Every cell the paper's text gives for Tables 1 to 4 (accuracy in %, Table 3: AlpacaEval 2.0 LC
win rate), with its Params column, its standard errors, and how many runs stand behind each
number. tests/test_published.py parses the paper's tables and checks every cell against these,
so a typo here fails a test. Appendix F.3's standard deviations lost their cells in the paper's
text (math mode), except the SFT rows' 0.0, which say SFT is one deterministic run (n=1).

Each row also says which variant it is (:class:`Variant`), so that ``steer compare`` can tell a
run of the same variant from a neighbour (a rank-1 run beside the paper's rank-8 row).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

TASKS_T1 = ("boolq", "winogrande", "arc_challenge", "gsm8k", "aqua", "listops")
TASKS_T4 = ("gsm8k", "boolq", "winogrande")

# Section 6: "Tables 1 and 2 report the mean accuracy of five independent runs"; appendix F.3:
# "We report a single SFT run (deterministic)". Table 3's rows are single runs whose SE is
# AlpacaEval's, across its 805 instructions. Table 4 states no run count.
FIVE_RUNS = 5
ONE_RUN = 1


@dataclass(frozen=True)
class Quoted:
    """A figure the paper gives in its prose, with the words that give it: ``make check-paper``
    finds ``quote`` in the paper's text, and tests/test_published.py finds ``value`` in it."""

    value: int | tuple[int, ...]
    quote: str


# What the claims report (scripts/claims_*.py) cites from the paper's prose.
PROSE = {
    "lr_grid": Quoted(
        5, "we select the optimal learning rate via grid search over five values using a validation"
    ),
    "runs": Quoted(FIVE_RUNS, "Tables 1 and 2 report the mean accuracy of five independent runs"),
    "mlp_share": Quoted(
        (40, 70),
        "MLP outputs account for only 40–70% of total block output magnitude across layers",
    ),
}


@dataclass(frozen=True)
class Variant:
    """What a row trains, in steer's terms; ``None``: the row has no such setting, or the paper
    does not state it (then nothing is compared)."""

    method: str
    rank: int | None = None  # the adapter's rank (lowrank, loreft)
    lora_rank: int | None = None
    activation: str | None = None  # "none" (linear), or "nonlinear": the paper names none
    layers: str | int | None = None  # "all", or how many layers
    mode: str | None = None  # joint runs: "both", or one part alone
    rank_match: str | None = None  # the rank is set by a rule: "lora" = LoRA r=8's count
    positions: str | None = None  # tokens steered, where a run's differ from its preset's
    site: str | None = None  # where a run steers, where it differs from its preset's
    objective: str | None = "sft"  # how it was trained: the paper's rows are supervised


@dataclass(frozen=True)
class PaperRow:
    model: str  # the paper's model, in the hub's spelling
    name: str  # the paper's name for the row; where its math was lost, what the Params say
    variant: Variant
    scores: Mapping[str, float]
    params: str | None = None  # the Params column as printed ("0.004%")
    n: int | None = None  # runs behind each number; None: not stated
    se: Mapping[str, float] = field(default_factory=dict)
    why: str = ""  # where the variant's facts come from, when not from the row's name

    @property
    def params_percent(self) -> float | None:
        return None if self.params is None else float(self.params.rstrip("%"))


@dataclass(frozen=True)
class PaperTable:
    name: str
    title: str
    tasks: tuple[str, ...]
    decimals: int  # the paper's precision
    rows: tuple[PaperRow, ...]

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(row.model for row in self.rows))


def _table(tasks: tuple[str, ...], model: str, rows: list[tuple], **common) -> list[PaperRow]:
    """``(name, variant, params, scores..., [options])`` tuples of one model's rows."""
    out = []
    for name, variant, params, *rest in rows:
        options = rest.pop() if rest and isinstance(rest[-1], dict) else {}
        scores = dict(zip(tasks, rest, strict=True))
        out.append(PaperRow(model, name, variant, scores, params, **(common | options)))
    return out


_SFT = Variant("sft")
_SINGLE = {"n": ONE_RUN, "why": "appendix F.3: a single SFT run (deterministic)"}
_R8 = "appendix F.2: 'activation steering r=8 (ReFT and ours)', at both model sizes"
_LORA8 = "LoRA r=8 is the Params column (0.45%, 0.41%, 0.26%); gemma's cells repeat Llama's"


def _table1(model: str, lora: str, steer: str, scores: dict[str, tuple]) -> list[PaperRow]:
    return _table(
        TASKS_T1,
        model,
        [
            ("SFT", _SFT, "100%", *scores["SFT"], _SINGLE),
            ("LoRA", Variant("lora", lora_rank=8), lora, *scores["LoRA"], {"why": _LORA8}),
            ("ReFT", Variant("reft", rank=8, layers="all"), steer, *scores["ReFT"], {"why": _R8}),
            (
                "Ours",
                Variant("postblock", rank=8, activation="none", layers="all"),
                steer,
                *scores["Ours"],
                {"why": _R8},
            ),
        ],
        n=FIVE_RUNS,
    )


def _table2(model: str, params: tuple[str, str, str, str], scores: dict) -> list[PaperRow]:
    lofit, jola, vector, rank1 = params
    return _table(
        TASKS_T1,
        model,
        [
            ("LoFIT", Variant("lofit"), lofit, *scores["LoFIT"]),
            ("JoLA", Variant("jola"), jola, *scores["JoLA"]),
            ("Ours (1-vec)", Variant("postblock-vector"), vector, *scores["Ours (1-vec)"]),
            (
                "Ours r=1",
                Variant("postblock", rank=1, activation="none", layers="all"),
                rank1,
                *scores["Ours r=1"],
            ),
        ],
        n=FIVE_RUNS,
    )


# Section 6.4: "we set the adapter rank such that its parameter count is comparable to LoRA's".
_ADAPTER = Variant("postblock", activation="none", layers="all", rank_match="lora")
_JOINT = "LoRA r=8 plus an adapter whose count is comparable to LoRA's (section 6.4)"


def _table4(model: str, scores: dict[str, tuple]) -> list[PaperRow]:
    return _table(
        TASKS_T4,
        model,
        [
            ("SFT", _SFT, None, *scores["SFT"], {**_SINGLE, "why": "Table 1's single SFT run"}),
            ("LoRA (r=16)", Variant("lora", lora_rank=16), None, *scores["LoRA (r=16)"]),
            ("LoRA (r=8)", Variant("lora", lora_rank=8), None, *scores["LoRA (r=8)"]),
            (
                "Adapter",
                _ADAPTER,
                None,
                *scores["Adapter"],
                {"why": "its rank is set so its count is comparable to LoRA r=8's (section 6.4)"},
            ),
            (
                "Joint",
                Variant("joint", lora_rank=8, mode="both", rank_match="lora"),
                None,
                *scores["Joint"],
                {"why": _JOINT},
            ),
            (
                "Joint-Orth",
                Variant("joint-orth", lora_rank=8, mode="both", rank_match="lora"),
                None,
                *scores["Joint-Orth"],
                {"why": _JOINT},
            ),
        ],
    )


_T3 = "Params 0.05% of Llama-3.1-8B is rank 16 (0.052%)"
_T3_REFT4 = (
    "ReFT's published configuration at layers 3, 9, 18, 24; its rank did not survive in the "
    "paper's text"
)


def _table3() -> list[PaperRow]:
    model = "Llama-3.1-8B"
    rows = [
        ("Full SFT", _SFT, "100%", 11.49, {"se": {"alpaca": 0.51}}),
        (
            "Ours (nonlinear, r=16)",
            Variant("postblock", rank=16, activation="nonlinear", layers="all"),
            "0.05%",
            11.34,
            {"se": {"alpaca": 0.48}, "why": _T3 + "; the nonlinearity is not named"},
        ),
        (
            "Ours (linear, r=16)",
            Variant("postblock", rank=16, activation="none", layers="all"),
            "0.05%",
            11.00,
            {"se": {"alpaca": 0.53}, "why": _T3},
        ),
        (
            "LoRA (r=16)",
            Variant("lora", lora_rank=16),
            "0.52%",
            9.59,
            {"se": {"alpaca": 0.40}, "why": "0.52% of Llama-3.1-8B is LoRA r=16"},
        ),
        (
            "LoRA (r=8)",
            Variant("lora", lora_rank=8),
            "0.26%",
            10.52,
            {"se": {"alpaca": 0.48}, "why": "0.26% of Llama-3.1-8B is LoRA r=8"},
        ),
        (
            "ReFT (r=16, all layers)",
            Variant("reft", rank=16, layers="all"),
            "0.05%",
            10.96,
            {"se": {"alpaca": 0.43}, "why": _T3 + ": the parameter-matched variant"},
        ),
        (
            "ReFT (4 layers)",
            Variant("reft", layers=4),
            "0.004%",
            9.50,
            {"se": {"alpaca": 0.49}, "why": _T3_REFT4},
        ),
    ]
    return _table(("alpaca",), model, rows, n=ONE_RUN)


PUBLISHED: dict[str, PaperTable] = {
    "table1": PaperTable(
        "table1",
        "Table 1: accuracy against SFT, LoRA and ReFT",
        TASKS_T1,
        1,
        tuple(
            _table1(
                "Llama-3.2-1B",
                "0.45%",
                "0.04%",
                {
                    "SFT": (88.2, 58.2, 60.3, 32.2, 36.2, 66.2),
                    "LoRA": (84.7, 57.0, 61.6, 31.8, 33.6, 60.0),
                    "ReFT": (84.1, 49.3, 57.0, 31.6, 30.2, 49.3),
                    "Ours": (86.2, 60.1, 60.3, 31.5, 36.5, 65.4),
                },
            )
            + _table1(
                "gemma-3-1b",
                "0.45%",
                "0.04%",
                {
                    "SFT": (83.3, 51.4, 48.2, 23.4, 32.7, 65.8),
                    "LoRA": (84.7, 51.6, 50.6, 22.6, 31.6, 53.6),
                    "ReFT": (76.2, 49.2, 27.8, 11.6, 24.6, 50.3),
                    "Ours": (82.0, 50.8, 48.9, 21.6, 32.1, 65.2),
                },
            )
            + _table1(
                "Qwen3-4B",
                "0.41%",
                "0.04%",
                {
                    "SFT": (91.4, 83.0, 88.4, 37.0, 64.8, 77.1),
                    "LoRA": (91.0, 84.6, 88.8, 37.6, 66.7, 78.0),
                    "ReFT": (90.5, 64.9, 84.7, 37.7, 66.8, 68.7),
                    "Ours": (90.7, 80.6, 88.6, 37.4, 65.0, 74.0),
                },
            )
            + _table1(
                "Llama-3.1-8B",
                "0.26%",
                "0.02%",
                {
                    "SFT": (91.6, 86.4, 80.6, 44.0, 47.7, 67.2),
                    "LoRA": (92.3, 88.8, 80.4, 43.8, 45.4, 67.6),
                    "ReFT": (91.3, 82.1, 77.9, 40.1, 45.4, 64.4),
                    "Ours": (92.3, 87.2, 80.4, 43.4, 47.6, 69.1),
                },
            )
        ),
    ),
    "table2": PaperTable(
        "table2",
        "Table 2: tiny budgets against LoFiT and JoLA",
        TASKS_T1,
        1,
        tuple(
            _table2(
                "Llama-3.2-1B",
                ("0.003%", "0.007%", "0.003%", "0.005%"),
                {
                    "LoFIT": (83.0, 49.2, 46.3, 28.2, 32.5, 64.1),
                    "JoLA": (83.6, 48.7, 52.5, 28.0, 31.1, 62.2),
                    "Ours (1-vec)": (86.1, 57.6, 58.0, 28.6, 30.9, 64.6),
                    "Ours r=1": (86.2, 52.0, 58.8, 29.2, 33.6, 64.4),
                },
            )
            + _table2(
                "gemma-3-1b",
                ("0.003%", "0.007%", "0.003%", "0.005%"),
                {
                    "LoFIT": (75.8, 49.6, 46.7, 15.1, 28.4, 62.3),
                    "JoLA": (75.1, 51.2, 46.4, 14.7, 26.5, 57.8),
                    "Ours (1-vec)": (74.2, 51.4, 44.5, 18.0, 26.8, 61.9),
                    "Ours r=1": (83.1, 51.8, 49.0, 19.0, 27.4, 65.2),
                },
            )
            + _table2(
                "Qwen3-4B",
                ("0.003%", "0.007%", "0.003%", "0.005%"),
                {
                    "LoFIT": (90.2, 77.8, 87.6, 39.1, 67.8, 65.3),
                    "JoLA": (89.6, 75.7, 88.1, 38.9, 64.0, 64.5),
                    "Ours (1-vec)": (90.4, 79.0, 86.3, 37.1, 63.4, 65.3),
                    "Ours r=1": (90.0, 80.2, 88.4, 39.1, 65.9, 63.6),
                },
            )
            + _table2(
                "Llama-3.1-8B",
                ("0.001%", "0.003%", "0.001%", "0.003%"),
                {
                    "LoFIT": (89.9, 48.7, 73.8, 39.8, 47.0, 64.8),
                    "JoLA": (90.5, 50.3, 76.9, 37.7, 46.2, 63.8),
                    "Ours (1-vec)": (91.7, 86.6, 80.0, 39.7, 44.9, 66.4),
                    "Ours r=1": (91.3, 85.9, 80.3, 40.7, 45.6, 68.5),
                },
            )
        ),
    ),
    "table3": PaperTable(
        "table3",
        "Table 3: AlpacaEval 2.0 LC win rate vs GPT-4 Turbo (Alpaca-cleaned)",
        ("alpaca",),
        2,
        tuple(_table3()),
    ),
    "table4": PaperTable(
        "table4",
        "Table 4: joint weight + activation training",
        TASKS_T4,
        1,
        tuple(
            _table4(
                "Llama-3.2-1B",
                {
                    "SFT": (32.2, 88.2, 58.2),
                    "LoRA (r=16)": (31.2, 88.4, 64.3),
                    "LoRA (r=8)": (31.8, 84.7, 57.0),
                    "Adapter": (31.3, 86.2, 52.4),
                    "Joint": (31.1, 88.4, 56.9),
                    "Joint-Orth": (31.1, 88.5, 59.3),
                },
            )
            + _table4(
                "gemma-3-1b",
                {
                    "SFT": (23.4, 83.3, 51.4),
                    "LoRA (r=16)": (23.8, 84.8, 51.8),
                    "LoRA (r=8)": (22.6, 84.7, 51.4),
                    "Adapter": (21.6, 81.4, 50.8),
                    "Joint": (22.8, 84.5, 51.3),
                    "Joint-Orth": (24.4, 84.8, 50.9),
                },
            )
            + _table4(
                "Qwen3-4B",
                {
                    "SFT": (37.0, 91.4, 83.0),
                    "LoRA (r=16)": (38.3, 91.0, 83.0),
                    "LoRA (r=8)": (37.6, 91.0, 84.6),
                    "Adapter": (37.3, 90.3, 82.5),
                    "Joint": (37.9, 90.7, 82.7),
                    "Joint-Orth": (38.8, 91.4, 83.5),
                },
            )
        ),
    ),
}
