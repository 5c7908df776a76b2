"""The PCCF parser on real GRAZPEDWRI-DX code shapes, and the manifest's AO columns it yields."""

import pandas as pd
import pytest

from fracture.sources.ao import (
    CODE_MALFORMED,
    CODE_NOT_PCCF,
    CODE_OK,
    STATUS_MALFORMED,
    STATUS_NONE,
    STATUS_NOT_PCCF,
    STATUS_OK,
    ao_fields,
    ao_summary,
    parse_code,
    parse_codes,
)


def test_a_single_bone_code_parses_into_its_parts() -> None:
    result = parse_code("23r-E/2.1")
    assert result.status == CODE_OK
    code = result.code
    assert (code.bone, code.segment, code.pair, code.subsegment, code.pattern, code.severity) == (2, 3, "r", "E", 2, 1)
    assert code.bones == ("radius",) and code.child == "E/2"
    assert code.salter_harris == "II" and code.physeal


def test_a_both_bone_code_without_r_or_u_documents_both_bones() -> None:
    code = parse_code("23-M/3.1").code
    assert code.pair is None and code.bones == ("radius", "ulna")
    assert code.child == "M/3" and not code.physeal and code.salter_harris is None


def test_severity_may_be_omitted() -> None:
    code = parse_code("23u-E/7").code
    assert code.severity is None and code.text == "23u-E/7"
    assert code.child == "E/7" and not code.physeal  # ulnar styloid avulsion: epiphyseal, not the growth plate


@pytest.mark.parametrize("raw", ["13-M/7.1M", "13-M/7M.1", "13-M/7.1 M", "13-m/7.1m"])
def test_avulsion_side_is_read_by_position_not_confused_with_the_subsegment(raw: str) -> None:
    code = parse_code(raw).code
    assert code is not None, parse_code(raw).reason
    assert (code.subsegment, code.pattern, code.severity, code.side) == ("M", 7, 1, "M")
    assert code.text == "13-M/7.1M"


def test_lateral_avulsion_of_the_epiphysis() -> None:
    code = parse_code("23u-E/7L").code
    assert (code.subsegment, code.side, code.severity) == ("E", "L", None)


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [("23R-e/2.1", "23r-E/2.1"), ("  23r - M / 2 . 1 ", "23r-M/2.1"), ("13-M/3.1 iii", "13-M/3.1 III")],
)
def test_case_and_stray_spaces_are_normalised(raw: str, normalised: str) -> None:
    result = parse_code(raw)
    assert result.status == CODE_OK and result.text == normalised


@pytest.mark.parametrize("pattern, sh", [(1, "I"), (2, "II"), (3, "III"), (4, "IV")])
def test_epiphyseal_patterns_one_to_four_are_salter_harris(pattern: int, sh: str) -> None:
    assert parse_code(f"23r-E/{pattern}.1").code.salter_harris == sh


@pytest.mark.parametrize(("pattern", "physeal"), [(5, True), (6, True), (7, False), (8, False), (9, False)])
def test_tillaux_and_triplane_are_physeal_avulsion_and_flake_are_not(pattern: int, physeal: bool) -> None:
    code = parse_code(f"23r-E/{pattern}.1").code
    assert code.physeal is physeal and code.salter_harris is None


@pytest.mark.parametrize("raw", ["72B(b)", "23A2.1", "77.2.1A"])
def test_adult_ao_ota_codes_parse_but_are_not_pccf(raw: str) -> None:
    result = parse_code(raw)
    assert result.status == CODE_NOT_PCCF and result.code is None and result.text == raw


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("23r-X/2.1", "subsegment"),
        ("23r-D/2.1", "does not fit segment"),  # diaphysis in the distal segment
        ("22r-M/2.1", "does not fit segment"),  # metaphysis in the shaft
        ("23r-M/5.1", "child pattern 5"),  # M has 2, 3, 7, 9 only
        ("22r-D/3.1", "child pattern 3"),
        ("23r-M/2.3", "severity 3"),
        ("23x-M/2.1", "bone letter"),
        ("13r-M/3.1", "bone letter"),  # the humerus is not a pair
        ("53-M/2.1", "not a PCCF long bone"),
        ("23r-M/2.1L", "avulsions"),  # a side on a buckle fracture
        ("23r-M/2.1 III", "displacement"),  # displacement codes: supracondylar humerus and radial head only
        ("23r-M/2.1 23u-E/7", "shape"),  # a missing separator
        ("fracture", "shape"),
        ("23r-M2.1", "shape"),
        ("23r-M/2.", "shape"),
    ],
)
def test_malformed_codes_are_refused_with_a_reason_never_guessed(raw: str, why: str) -> None:
    result = parse_code(raw)
    assert result.status == CODE_MALFORMED and result.code is None
    assert why in result.reason


def test_several_codes_per_image_with_the_datasets_separator() -> None:
    row = parse_codes("23r-M/3.1; 23u-E/7")
    assert row.status == STATUS_OK
    assert [c.child for c in row.codes] == ["M/3", "E/7"]
    assert row.normalised == "23r-M/3.1;23u-E/7"


@pytest.mark.parametrize("cell", [None, float("nan"), "", "   ", ";", " ; "])
def test_blank_cells_mean_no_code(cell) -> None:
    row = parse_codes(cell)
    assert row.status == STATUS_NONE and row.normalised is None and row.codes == ()


def test_row_status_malformed_beats_not_pccf_beats_ok() -> None:
    assert parse_codes("23r-M/2.1;72B(b)").status == STATUS_NOT_PCCF
    mixed = parse_codes("23r-M/2.1; 72B(b); 23r-Q/1")
    assert mixed.status == STATUS_MALFORMED
    assert [r.raw for r in mixed.malformed] == ["23r-Q/1"]
    assert mixed.normalised == "23r-M/2.1;72B(b)"  # what parsed stays; the raw cell keeps the rest


def test_ao_fields_give_targets_only_for_a_visible_fracture_with_pccf_codes() -> None:
    assert ao_fields("23r-E/2.1; 23r-E/4.1; 23u-E/7", True) == {
        "ao_codes": "23r-E/2.1;23r-E/4.1;23u-E/7",
        "ao_status": STATUS_OK,
        "physeal": True,
        "salter_harris": "II;IV",
    }
    assert ao_fields("23r-M/2.1;23u-E/7", True)["physeal"] is False
    assert ao_fields("23r-M/2.1;23u-E/7", True)["salter_harris"] == ""  # known: none


@pytest.mark.parametrize(
    ("cell", "visible", "status"),
    [
        ("23r-E/2.1", False, STATUS_OK),  # coded for the study, not visible on this view: excluded
        ("", True, STATUS_NONE),  # a visible fracture without a code: unknown, not negative
        ("72B(b)", True, STATUS_NOT_PCCF),
        ("23r-E/2.1; 23r-E/2.x", True, STATUS_MALFORMED),
    ],
)
def test_ao_targets_stay_unknown_rather_than_guessed(cell: str, visible: bool, status: str) -> None:
    fields = ao_fields(cell, visible)
    assert fields["ao_status"] == status
    assert fields["physeal"] is None and fields["salter_harris"] is None


def test_ao_summary_counts_statuses_exclusions_and_lists_malformed_rows() -> None:
    cells = ["23r-E/2.1", "23r-E/2.1", "", "23r-M/2.1;72B(b)", "23r-Q/1", "", "23r-M/3.1; 23u-E/7"]
    labels = [1, 0, 1, 1, 1, 0, 1]
    rows = [
        {"path": f"p{i}.png", "ao_code": c or None, "label": y, **ao_fields(c, y == 1)}
        for i, (c, y) in enumerate(zip(cells, labels, strict=True))
    ]
    rows.append(
        {
            "path": "mura.png",
            "ao_code": None,
            "label": 1,
            "ao_codes": None,
            "ao_status": None,
            "physeal": None,
            "salter_harris": None,
        }
    )  # other sources: no AO status, not counted
    summary = ao_summary(pd.DataFrame(rows).astype({"physeal": "boolean"}))
    assert summary["rows"] == 7
    assert summary["row_status"] == {"none": 2, "ok": 3, "not_pccf": 1, "malformed": 1}
    assert summary["codes"] == {"ok": 5, "not_pccf": 1, "malformed": 1}
    assert summary["coded_not_visible"] == 1 and summary["visible_without_code"] == 1
    assert summary["visible_code_unusable"] == 2 and summary["targets_known"] == 2
    assert summary["physeal"] == {"yes": 1, "no": 1}
    assert summary["salter_harris"] == {"I": 0, "II": 1, "III": 0, "IV": 0}
    assert summary["child_patterns"] == {"E/2": 1, "E/7": 1, "M/3": 1}
    assert summary["malformed"] == [
        {
            "path": "p4.png",
            "ao_code": "23r-Q/1",
            "malformed": [{"code": "23r-Q/1", "reason": summary["malformed"][0]["malformed"][0]["reason"]}],
        }
    ]
    assert "subsegment" in summary["malformed"][0]["malformed"][0]["reason"]
