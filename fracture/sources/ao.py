"""AO Pediatric Comprehensive Classification of Long-Bone Fractures (PCCF) codes: the one parser.

GRAZPEDWRI-DX's `ao_classification` holds PCCF codes such as `23r-M/2.1`, several per image joined by `"; "`.
Every consumer (ingest's manifest columns, the AO / physeal task targets, the reports) reads them through this
module, so a code means one thing everywhere.

Code shape (Slongo T, Audigé L, AO Pediatric Classification Group. AO Pediatric Comprehensive Classification of
Long-Bone Fractures (PCCF). AO Foundation, 2007; Slongo TF, Audigé L, et al. Fracture and dislocation
classification compendium for children: the AO pediatric comprehensive classification of long bone fractures
(PCCF). J Orthop Trauma 2007;21(10 Suppl):S135-60, updated in J Orthop Trauma 2018;32 Suppl 1:S117-40; AO
Surgery Reference, "Classification of children's fractures"):

    <bone><segment>[<pair bone>]-<subsegment>/<child pattern>[.<severity>][<avulsion side>][ <displacement>]

- bone: 1 humerus, 2 radius / ulna, 3 femur, 4 tibia / fibula (the four long bones; nothing else is PCCF).
- pair bone: in a paired bone a small letter names the one bone fractured (`r`/`u`, `t`/`f`); without it both
  bones are fractured with the same pattern and one code documents both.
- segment: 1 proximal, 2 diaphyseal, 3 distal. Subsegment: `E` epiphysis or `M` metaphysis in the end segments
  1 and 3, `D` diaphysis in segment 2.
- child pattern (subsegment-specific): E/1-E/4 Salter-Harris I-IV, E/5 Salter-Harris III-IV two-plane (Tillaux),
  E/6 triplane, E/7 ligament avulsion, E/8 flake, E/9 other; M/2 incomplete (torus / buckle or greenstick), M/3
  complete, M/7 avulsion, M/9 other; D/1 bowing, D/2 greenstick, D/4 complete transverse (<= 30 degrees), D/5
  complete oblique / spiral (> 30 degrees), D/6 Monteggia, D/7 Galeazzi, D/9 other.
- severity: `.1` simple, `.2` multifragmentary; real codes may omit it (`23u-E/7`).
- avulsion side: `M` medial or `L` lateral, a modifier of the E/7 and M/7 avulsions only. It is told apart from
  the subsegment letter by its position (after the child pattern), accepted before or after the severity and
  normalised after it (`13-M/7.1M`).
- displacement: roman numerals for displaced supracondylar humeral fractures (13-M/3, I-IV) and radial head and
  neck fractures (21r-E/1-2, 21r-M/2-3, I-III), separated by a space.

Growth plate (physis) involved: an `E` code with child pattern 1-6. E/7 (the frequent ulnar styloid avulsion
`23u-E/7`) and E/8 (flake) are epiphyseal but not physeal.

A code that follows the adult AO/OTA shape instead (`72B(b)`, a carpal scaphoid code; `23A2.1`, an adult distal
radius) parses but is "not PCCF". Anything else is "malformed", with the reason. Neither is ever guessed into a
PCCF code.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from fracture.contracts.schema import AO_STATUSES

SEPARATOR = ";"
# Per code: a PCCF long-bone code, an AO/OTA code outside the PCCF, or neither.
CODE_OK, CODE_NOT_PCCF, CODE_MALFORMED = "ok", "not_pccf", "malformed"
# Per row: `ao_status` in the manifest (its contract lives in fracture.contracts.schema).
ROW_STATUSES = AO_STATUSES
STATUS_NONE, STATUS_OK, STATUS_NOT_PCCF, STATUS_MALFORMED = AO_STATUSES

BONES = {1: "humerus", 2: "radius/ulna", 3: "femur", 4: "tibia/fibula"}
PAIR_BONES = {2: {"r": "radius", "u": "ulna"}, 4: {"t": "tibia", "f": "fibula"}}
SUBSEGMENTS = {"E": "epiphysis", "M": "metaphysis", "D": "diaphysis"}
PATTERNS: dict[str, dict[int, str]] = {
    "E": {
        1: "Salter-Harris I",
        2: "Salter-Harris II",
        3: "Salter-Harris III",
        4: "Salter-Harris IV",
        5: "Tillaux (two-plane)",
        6: "triplane",
        7: "ligament avulsion",
        8: "flake",
        9: "other",
    },
    "M": {2: "incomplete (torus / buckle or greenstick)", 3: "complete", 7: "avulsion", 9: "other"},
    "D": {
        1: "bowing",
        2: "greenstick",
        4: "complete transverse",
        5: "complete oblique / spiral",
        6: "Monteggia",
        7: "Galeazzi",
        9: "other",
    },
}
SEVERITIES = {1: "simple", 2: "multifragmentary"}
SALTER_HARRIS = {1: "I", 2: "II", 3: "III", 4: "IV"}
PHYSEAL_PATTERNS = frozenset({1, 2, 3, 4, 5, 6})
AVULSION_PATTERN = 7
# (bone, segment) -> subsegment -> child patterns that take a displacement code, and its largest value
DISPLACEMENT = {(1, 3): ({"M": {3}}, 4), (2, 1): ({"E": {1, 2}, "M": {2, 3}}, 3)}
ROMAN = {"I": 1, "II": 2, "III": 3, "IV": 4}

_PCCF = re.compile(
    r"""^(?P<bone>\d)(?P<segment>\d)(?P<pair>[a-z])?\s*-\s*(?P<sub>[a-z])\s*/\s*(?P<pattern>\d)
    \s*(?P<side1>[ml])?(?:\s*\.\s*(?P<severity>\d))?\s*(?P<side2>[ml])?(?:\s+(?P<disp>[ivx]+))?$""",
    re.IGNORECASE | re.VERBOSE,
)
# Adult AO/OTA (2018 compendium): location (2 digits, optional .n.n), type A-C, optional group/subgroup digits and
# qualifiers in brackets, e.g. 72B(b), 23A2.1, 77.2.1A.
_AO_OTA = re.compile(r"^\d{2}(?:\.\d){0,2}[ABC](?:\d(?:\.\d{1,2})?)?(?:\([a-z0-9,.]+\))*$")


@dataclass(frozen=True)
class PCCFCode:
    """One parsed PCCF long-bone code."""

    bone: int
    segment: int
    pair: str | None  # r / u / t / f, or None: both bones of a pair (or a single bone)
    subsegment: str  # E / M / D
    pattern: int
    severity: int | None  # 1 simple, 2 multifragmentary, None: not given
    side: str | None = None  # M / L, avulsions only
    displacement: str | None = None  # I-IV, supracondylar humerus and radial head / neck only

    @property
    def text(self) -> str:
        """The normalised code: `23r-E/2.1`, `23u-E/7`, `13-M/7.1M`, `13-M/3.1 III`."""
        code = f"{self.bone}{self.segment}{self.pair or ''}-{self.subsegment}/{self.pattern}"
        code += f".{self.severity}" if self.severity is not None else ""
        code += self.side or ""
        return code + (f" {self.displacement}" if self.displacement else "")

    @property
    def child(self) -> str:
        """Subsegment and child pattern, the AO task's class: `E/2`, `M/3`, `D/4`."""
        return f"{self.subsegment}/{self.pattern}"

    @property
    def physeal(self) -> bool:
        """Growth plate involved: Salter-Harris I-IV, Tillaux or triplane (E/1-E/6)."""
        return self.subsegment == "E" and self.pattern in PHYSEAL_PATTERNS

    @property
    def salter_harris(self) -> str | None:
        """Roman numeral of a Salter-Harris I-IV code, else None."""
        return SALTER_HARRIS.get(self.pattern) if self.subsegment == "E" else None

    @property
    def bones(self) -> tuple[str, ...]:
        """The bone(s) this code documents (both of a pair when no pair letter is given)."""
        pair = PAIR_BONES.get(self.bone)
        if pair is None:
            return (BONES[self.bone],)
        return (pair[self.pair],) if self.pair else tuple(pair.values())


@dataclass(frozen=True)
class CodeResult:
    """One `;`-separated part of a code string: its status and either the parsed code, the text, or the reason."""

    raw: str
    status: str  # CODE_OK | CODE_NOT_PCCF | CODE_MALFORMED
    code: PCCFCode | None = None
    reason: str | None = None  # why malformed

    @property
    def text(self) -> str:
        """Normalised text: the PCCF code's, else the stripped raw text."""
        return self.code.text if self.code is not None else self.raw


@dataclass(frozen=True)
class RowParse:
    """All codes of one `ao_classification` cell."""

    results: tuple[CodeResult, ...] = field(default=())

    @property
    def status(self) -> str:
        """Row status: malformed beats not_pccf beats ok; a blank cell is `none`."""
        found = {r.status for r in self.results}
        if CODE_MALFORMED in found:
            return STATUS_MALFORMED
        if CODE_NOT_PCCF in found:
            return STATUS_NOT_PCCF
        return STATUS_OK if found else STATUS_NONE

    @property
    def codes(self) -> tuple[PCCFCode, ...]:
        """The PCCF codes that parsed."""
        return tuple(r.code for r in self.results if r.code is not None)

    @property
    def normalised(self) -> str | None:
        """Every code that parsed (PCCF or not), normalised and `;`-joined; None when none did."""
        parts = [r.text for r in self.results if r.status != CODE_MALFORMED]
        return SEPARATOR.join(parts) if parts else None

    @property
    def malformed(self) -> tuple[CodeResult, ...]:
        """The parts that did not parse, with their reasons."""
        return tuple(r for r in self.results if r.status == CODE_MALFORMED)


def _check(code: PCCFCode) -> str | None:
    """Why a code of the PCCF shape is not a valid PCCF code, or None when it is."""
    if code.bone not in BONES:
        return f"bone {code.bone} is not a PCCF long bone (1-4)"
    if code.segment not in (1, 2, 3):
        return f"segment {code.segment} is not 1-3"
    pairs = PAIR_BONES.get(code.bone, {})
    if code.pair is not None and code.pair not in pairs:
        return f"bone letter {code.pair!r} does not belong to bone {code.bone}"
    if (code.segment == 2) != (code.subsegment == "D"):
        return f"subsegment {code.subsegment} does not fit segment {code.segment} (E/M at the ends, D in the shaft)"
    if code.pattern not in PATTERNS[code.subsegment]:
        return f"child pattern {code.pattern} does not exist for {code.subsegment}"
    if code.severity is not None and code.severity not in SEVERITIES:
        return f"severity {code.severity} is not 1 or 2"
    if code.side is not None and code.pattern != AVULSION_PATTERN:
        return f"side {code.side} is a modifier of avulsions (/7) only"
    if code.displacement is not None:
        allowed, top = DISPLACEMENT.get((code.bone, code.segment), ({}, 0))
        if code.pattern not in allowed.get(code.subsegment, ()) or ROMAN.get(code.displacement, 99) > top:
            return f"displacement {code.displacement} does not exist for {code.bone}{code.segment}-{code.child}"
    return None


def parse_code(raw: str) -> CodeResult:
    """One code (no separator) -> PCCF, not PCCF (adult AO/OTA shape), or malformed with a reason."""
    text = " ".join(raw.split())
    m = _PCCF.match(text)
    if m is None:
        if _AO_OTA.match(text):
            return CodeResult(text, CODE_NOT_PCCF)
        return CodeResult(text, CODE_MALFORMED, reason="not a PCCF or AO/OTA code shape")
    if m["side1"] and m["side2"]:
        return CodeResult(text, CODE_MALFORMED, reason="two avulsion side modifiers")
    disp = m["disp"].upper() if m["disp"] else None
    if disp is not None and disp not in ROMAN:
        return CodeResult(text, CODE_MALFORMED, reason=f"displacement {disp} is not I-IV")
    side = m["side1"] or m["side2"]
    code = PCCFCode(
        bone=int(m["bone"]),
        segment=int(m["segment"]),
        pair=m["pair"].lower() if m["pair"] else None,
        subsegment=m["sub"].upper(),
        pattern=int(m["pattern"]),
        severity=int(m["severity"]) if m["severity"] else None,
        side=side.upper() if side else None,
        displacement=disp,
    )
    if code.subsegment not in SUBSEGMENTS:
        return CodeResult(text, CODE_MALFORMED, reason=f"subsegment {code.subsegment} is not E, M or D")
    reason = _check(code)
    if reason is not None:
        return CodeResult(text, CODE_MALFORMED, reason=reason)
    return CodeResult(text, CODE_OK, code=code)


def parse_codes(cell: object) -> RowParse:
    """An `ao_classification` cell -> every code in it. None, NaN, blank and bare separators mean no code."""
    if cell is None or not isinstance(cell, str):
        return RowParse()
    parts = [p for p in cell.split(SEPARATOR) if p.strip()]
    return RowParse(tuple(parse_code(p) for p in parts))


def salter_harris_types(codes: Iterable[PCCFCode]) -> str:
    """The Salter-Harris types present, in order, `;`-joined (`II;IV`); empty when none."""
    found = {c.pattern for c in codes if c.salter_harris is not None}
    return SEPARATOR.join(SALTER_HARRIS[p] for p in sorted(found))


def ao_fields(cell: object, fracture_visible: bool) -> dict[str, object]:
    """The manifest's AO columns for one GRAZPEDWRI-DX row.

    `physeal` and `salter_harris` are the image's AO targets: known only when the fracture is visible on this view
    and every code is PCCF. A code on a view without a visible fracture belongs to the study (another view shows
    it): the targets stay null. A visible fracture without a code, or with a code that is malformed or not PCCF, is
    unknown too, never negative. `salter_harris` is "" when known to hold none.
    """
    parse = parse_codes(cell)
    known = fracture_visible and parse.status == STATUS_OK
    return {
        "ao_codes": parse.normalised,
        "ao_status": parse.status,
        "physeal": any(c.physeal for c in parse.codes) if known else None,
        "salter_harris": salter_harris_types(parse.codes) if known else None,
    }


def ao_summary(manifest: pd.DataFrame) -> dict[str, Any]:
    """Counts of the AO columns over a manifest's GRAZPEDWRI-DX rows, for ingest's summary.json.

    Rows and codes per status, coded views without a visible fracture (excluded from the AO targets), visible
    fractures without a usable code (unknown), the targets that are known, and every malformed code with its row.
    """
    rows = manifest[manifest["ao_status"].notna()]
    visible = rows["label"] == 1
    coded = rows["ao_status"] != STATUS_NONE
    known = rows["physeal"].notna()
    parses = [parse_codes(cell) for cell in rows["ao_code"].astype(object).where(rows["ao_code"].notna(), None)]
    code_counts = Counter(r.status for p in parses for r in p.results)
    sh_counts = Counter(t for t in rows.loc[known, "salter_harris"] for t in str(t).split(SEPARATOR) if t)
    child_counts = Counter(
        child for p, k in zip(parses, known, strict=True) if k for child in sorted({c.child for c in p.codes})
    )
    malformed = [
        {"path": path, "ao_code": str(cell), "malformed": [{"code": r.raw, "reason": r.reason} for r in bad]}
        for path, cell, p in zip(rows["path"], rows["ao_code"], parses, strict=True)
        if (bad := p.malformed)
    ]
    return {
        "rows": len(rows),
        "row_status": {s: int((rows["ao_status"] == s).sum()) for s in ROW_STATUSES},
        "codes": {s: int(code_counts[s]) for s in (CODE_OK, CODE_NOT_PCCF, CODE_MALFORMED)},
        "coded_not_visible": int((coded & ~visible).sum()),
        "visible_without_code": int((visible & ~coded).sum()),
        "visible_code_unusable": int((visible & rows["ao_status"].isin([STATUS_NOT_PCCF, STATUS_MALFORMED])).sum()),
        "targets_known": int(known.sum()),
        "physeal": {"yes": int(rows["physeal"].eq(True).sum()), "no": int(rows["physeal"].eq(False).sum())},
        "salter_harris": {t: int(sh_counts[t]) for t in SALTER_HARRIS.values()},
        "child_patterns": dict(sorted(child_counts.items())),
        "malformed": malformed,
    }
