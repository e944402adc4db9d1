"""Table I's Average column is the mean of the attack cells a row has (issue 15, item 5).

Paper, Table I: "Average denotes the average value of the defense performance against the six attack methods";
"-" cells (an attack that does not apply to a defence) are left out, and the "None" column (Standard Acc, no
attack) is not an attack. Each cell is an accuracy in %, so the Average is a mean of percentages, not the accuracy
pooled over the clips of all cells. The fixture has missing cells, nonzero scores and cells of different sizes, so
averaging over all columns, counting "None", or pooling over clips each give another number.
"""

import pytest

from videopure_core.evaluation import table_one
from videopure_core.evaluation.report import table_one_csv, table_one_markdown

ATTACKS = ["clean", "pgd", "pgd+bpda", "tt", "pgd+full"]


def records(defence, attack, correct, n):
    return [{"defence": defence, "attack": attack, "clip": f"c{i}", "correct": i < correct} for i in range(n)]


@pytest.fixture
def rows():
    recs = (records("videopure", "clean", 1, 2) + records("videopure", "pgd", 2, 2)
            + records("videopure", "pgd+bpda", 1, 4) + records("videopure", "pgd+full", 1, 1)  # no tt cell
            + records("jpeg", "clean", 2, 2) + records("jpeg", "pgd", 1, 2)
            + records("jpeg", "tt", 1, 3)  # no pgd+bpda, no pgd+full
            + records("none", "clean", 2, 2))  # no attack cell at all
    return table_one(recs, ["videopure", "jpeg", "none"], ATTACKS)


def test_average_is_the_mean_of_the_attack_cells_the_row_has(rows):
    videopure, jpeg, none = rows
    assert videopure["tt"] is None and jpeg["pgd+bpda"] is None and jpeg["pgd+full"] is None
    assert videopure["average"] == pytest.approx((100 + 25 + 100) / 3)  # pgd, pgd+bpda, pgd+full; not 56.25 over 4
    assert jpeg["average"] == pytest.approx((50 + 100 / 3) / 2)  # pgd, tt
    assert none["average"] is None  # no attack cell: no average (not 0, not its Standard Acc)


def test_the_tables_print_that_average(rows):
    lines = table_one_markdown(rows, ATTACKS).splitlines()
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    assert cells[0][-1] == "Average"
    assert [(c[0], c[-1]) for c in cells[2:]] == [("VideoPure", "75.0"), ("JPEG", "41.7"), ("None", "-")]
    csv = table_one_csv(rows, ATTACKS)
    assert "videopure,average,75.00,," in csv and "jpeg,average,41.67,," in csv and "none,average" not in csv
