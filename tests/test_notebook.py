"""How a Report shows in Jupyter: HTML parsed back with html.parser, Markdown, and a real headless browser."""

from __future__ import annotations

import base64
import html
import re
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass, replace
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

import gradcheck
from gradcheck.model import ParamResult, Report
from gradcheck.notebook import (MAX_CELLS, _ALARM, _CALM, error_colour, heatmap_svg, report_html,
                                report_markdown)

VOID = {"br", "meta", "img", "hr", "input", "link", "wbr"}


class Node:
    """One element of the parsed page."""

    def __init__(self, tag: str, attrs: dict, parent: Node | None):
        self.tag, self.attrs, self.parent, self.content = tag, attrs, parent, []  # text and Nodes, in order

    @property
    def children(self) -> list:
        return [c for c in self.content if isinstance(c, Node)]

    def all_text(self) -> str:
        return "".join(c if isinstance(c, str) else c.all_text() for c in self.content)

    def find(self, tag: str, **attrs: str) -> list:
        """Every descendant with this tag whose attributes contain these values (class: one of the words)."""
        found = []
        for c in self.children:
            if c.tag == tag and all(v in c.attrs.get(k.rstrip("_"), "").split() if k == "class_" else
                                    c.attrs.get(k) == v for k, v in attrs.items()):
                found.append(c)
            found += c.find(tag, **attrs)
        return found


class Tree(HTMLParser):
    """html.parser into Nodes, failing on any tag closed out of order or left open."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.root = self.node = Node("#root", {}, None)
        self.feed(text)
        self.close()
        assert self.node is self.root, f"<{self.node.tag}> left open"

    def handle_starttag(self, tag: str, attrs: list) -> None:
        node = Node(tag, dict(attrs), self.node)
        self.node.content.append(node)
        if tag not in VOID:
            self.node = node

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        self.node.content.append(Node(tag, dict(attrs), self.node))

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        assert self.node.tag == tag, f"</{tag}> closes <{self.node.tag}>"
        self.node = self.node.parent

    def handle_data(self, data: str) -> None:
        self.node.content.append(data)


# ----------------------------------------------------------------- a learner's two-layer ReLU net


def loss(p, X, y):
    h = np.maximum(0, X @ p["W1"] + p["b1"])
    out = h @ p["W2"] + p["b2"]
    return 0.5 * np.mean(np.sum((out - y) ** 2, axis=1))


def grad_mask_without_bias(p, X, y):
    """A planted bug: ReLU's mask is taken from X @ W1, without the bias (should be z < 0)."""
    z = X @ p["W1"] + p["b1"]
    h = np.maximum(0, z)
    dout = (h @ p["W2"] + p["b2"] - y) / X.shape[0]
    dh = dout @ p["W2"].T
    dh[X @ p["W1"] < 0] = 0
    return {"W1": X.T @ dh, "b1": dh.sum(axis=0), "W2": h.T @ dout, "b2": dout.sum(axis=0)}


def grad_right(p, X, y):
    z = X @ p["W1"] + p["b1"]
    h = np.maximum(0, z)
    dout = (h @ p["W2"] + p["b2"] - y) / X.shape[0]
    dh = dout @ p["W2"].T
    dh[z < 0] = 0
    return {"W1": X.T @ dh, "b1": dh.sum(axis=0), "W2": h.T @ dout, "b2": dout.sum(axis=0)}


def case():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(6, 5)), rng.normal(size=(6, 2))
    params = {"W1": rng.normal(size=(5, 8)), "b1": rng.normal(size=8) * 0.3,
              "W2": rng.normal(size=(8, 2)) * 0.5, "b2": np.zeros(2)}
    return params, (X, y)


@pytest.fixture(scope="module")
def buggy() -> Report:
    params, data = case()
    return gradcheck.check(loss, grad_mask_without_bias, params, data, against=["numeric", "jax"])


@pytest.fixture(scope="module")
def right() -> Report:
    params, data = case()
    return gradcheck.check(loss, grad_right, params, data, against=["numeric", "jax"])


def with_blame(p: ParamResult, blame) -> ParamResult:
    """The parameter result as it is once per-parameter results carry an optional `blame`."""
    object.__setattr__(p, "blame", blame)  # set on a frozen copy, whether or not the class has the field
    return p


def calm(colour: str) -> bool:
    """A colour of the within-tolerance (blue) half of the scale: blue is its largest channel."""
    r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return b >= r and b >= g


# ----------------------------------------------------------------- HTML


def test_a_failing_report_shows_verdict_table_and_a_finding_per_failing_parameter(buggy) -> None:
    assert {p.name for p in buggy.failures} == {"W1", "b1"} and buggy["W1"].diagnosis == "partial"
    page = Tree(buggy._repr_html_()).root
    verdict = page.find("p", class_="gc-verdict")[0].all_text()
    assert "\u2717" in verdict and "FAILED (2 of 4 parameters wrong)" in verdict and "numeric, jax" in verdict
    rows = page.find("table", class_="gc-table")[0].find("tr")
    assert [c.all_text() for c in rows[0].find("th")][:3] == ["parameter", "shape", "verdict"]
    cells = {r.find("td")[0].all_text(): [c.all_text() for c in r.find("td")] for r in rows[1:]}
    assert set(cells) == {"W1", "b1", "W2", "b2"}
    assert cells["W1"][1:3] == ["(5, 8)", "\u2717 FAIL"] and cells["W1"][-1] == "partial"
    assert cells["W2"][2] == "\u2713 PASS" and cells["b2"][-1] == "ok"
    findings = page.find("div", class_="gc-finding")
    assert [f.attrs["data-parameter"] for f in findings] == ["W1", "b1"]
    w1 = findings[0].all_text()
    assert "likely cause:" in w1 and "mask" in buggy["W1"].cause and buggy["W1"].cause in w1
    assert f"worst element W1[{', '.join(map(str, buggy['W1'].worst_index))}]" in w1
    assert "blamed line" not in w1  # nothing to blame yet: nothing shown


def test_the_heatmap_has_one_cell_per_element_coloured_by_its_relative_error(buggy) -> None:
    p = buggy["W1"]
    svg = Tree(heatmap_svg(p)).root.find("svg")[0]
    cells = [r for r in svg.find("rect") if r.find("title")]
    assert len(cells) == 40
    by_name = {r.find("title")[0].all_text().split(":")[0]: r.attrs["fill"] for r in cells}
    assert set(by_name) == {f"W1[{i}, {j}]" for i in range(5) for j in range(8)}
    wrong = {f"W1[{i}, {j}]" for i, j in p.wrong_indices}
    assert wrong and {n for n, fill in by_name.items() if not calm(fill)} == wrong
    for (i, j), rel in np.ndenumerate(p.rel_errors):
        assert by_name[f"W1[{i}, {j}]"] == error_colour(rel, p.rtol)


def test_colours_blue_within_the_tolerance_and_red_beyond_it() -> None:
    assert calm(error_colour(1e-16, 1e-8)) and calm(error_colour(1e-9, 1e-8))
    assert not calm(error_colour(1e-6, 1e-8)) and not calm(error_colour(2.0, 1e-8))
    assert error_colour(2.0, 1e-8) == "#" + "".join(f"{round(255 * c):02x}" for c in _ALARM[1])
    assert error_colour(0.0, 1e-8) == "#" + "".join(f"{round(255 * c):02x}" for c in _CALM[0])


def test_a_passing_report_has_no_finding_and_no_heatmap(right) -> None:
    assert right.passed
    page = Tree(right._repr_html_()).root
    assert "\u2713" in page.find("p", class_="gc-verdict")[0].all_text()
    assert "gradient check PASSED" in page.all_text()
    assert not page.find("div", class_="gc-finding") and not page.find("svg")


def test_large_leaves_are_pooled_by_their_worst_element() -> None:
    rel = np.full((200, 300), 1e-15)
    rel[150, 250] = 0.5
    p = ParamResult(name="W", shape=(200, 300), dtype="float64", passed=False, diagnosis="partial", detail="",
                    rtol=1e-8, rel_errors=rel)
    cells = [r for r in Tree(heatmap_svg(p)).root.find("rect") if r.find("title")]
    assert len(cells) <= MAX_CELLS * MAX_CELLS
    red = [r.find("title")[0].all_text() for r in cells if not calm(r.attrs["fill"])]
    assert len(red) == 1
    r0, r1, c0, c1 = map(int, re.search(r"rows (\d+)-(\d+), columns (\d+)-(\d+)", red[0]).groups())
    assert r0 <= 150 <= r1 and c0 <= 250 <= c1 and "worst element of the block" in red[0]


@pytest.mark.parametrize("shape, names", [
    ((), ["s"]),
    ((2, 3, 4), ["s[0, 0, 0]", "s[1, 2, 3]", "s[0, 1, 2]"]),
])
def test_cells_are_named_by_the_index_in_the_parameters_own_shape(shape, names) -> None:
    p = ParamResult(name="s", shape=shape, dtype="float64", passed=False, diagnosis="wrong", detail="",
                    rtol=1e-8, rel_errors=np.full(shape, 0.1))
    titles = [r.find("title")[0].all_text().split(":")[0] for r in Tree(heatmap_svg(p)).root.find("rect")
              if r.find("title")]
    assert len(titles) == int(np.prod(shape)) and set(names) <= set(titles)


def test_the_svg_is_well_formed_xml_and_wide_enough_for_its_scale(buggy) -> None:
    import xml.etree.ElementTree as ET

    for p in buggy.failures:
        svg = ET.fromstring(heatmap_svg(p))  # a standalone image (the Markdown embeds it as a file)
        assert svg.tag == "{http://www.w3.org/2000/svg}svg"
    tiny = ParamResult(name="b", shape=(2,), dtype="float64", passed=False, diagnosis="wrong", detail="",
                       rtol=1e-8, rel_errors=np.array([0.5, 1e-12]))
    svg = ET.fromstring(heatmap_svg(tiny))
    legend_end = max(float(r.get("x")) + float(r.get("width")) for r in svg.iter("{http://www.w3.org/2000/svg}rect"))
    assert legend_end <= float(svg.get("width"))


def test_only_the_first_failing_parameters_get_a_heatmap() -> None:
    from gradcheck.notebook import MAX_HEATMAPS

    names = [f"w{i:02d}" for i in range(MAX_HEATMAPS + 2)]
    params = {n: np.full(3, 0.5) for n in names}
    report = gradcheck.check(lambda p: float(sum(np.sum(v ** 2) for v in p.values())),
                             lambda p: {n: 3 * v for n, v in p.items()}, params, against="numeric")
    assert len(report.failures) == len(names)
    page = Tree(report._repr_html_()).root
    assert len(page.find("div", class_="gc-finding")) == len(names)
    assert len(page.find("svg")) == MAX_HEATMAPS
    note = page.find("ul", class_="gc-notes")[0].all_text()
    assert f"not for {names[-2]}, {names[-1]}" in note
    assert report._repr_markdown_().count("data:image/svg+xml") == MAX_HEATMAPS


def test_ipython_terminal_shows_the_text_table(buggy) -> None:
    class Printer:
        def __init__(self):
            self.out = []

        def text(self, t: str) -> None:
            self.out.append(t)

    printer = Printer()
    buggy._repr_pretty_(printer, False)
    assert printer.out == [str(buggy)]


def test_no_heatmap_without_relative_errors() -> None:
    p = ParamResult(name="b", shape=(3,), dtype="float64", passed=False, diagnosis="wrong_shape", detail="d")
    assert heatmap_svg(p) == ""


def test_everything_from_the_users_code_is_escaped() -> None:
    def loss2(p):
        return float(np.sum(p["<script>alert(1)</script>"] ** 2) + np.sum(p["a|b"] ** 2))

    def grad2(p):
        return {"<script>alert(1)</script>": 3 * p["<script>alert(1)</script>"], "a|b": 2 * p["a|b"]}

    report = gradcheck.check(loss2, grad2, {"<script>alert(1)</script>": np.ones(2), "a|b": np.ones(2)},
                             against="numeric", title="<i>mine</i>")
    bad = report["<script>alert(1)</script>"]
    with_blame(bad, {"filename": "<b>net.py</b>", "lineno": 7, "source": "dW = 3 * W  # <wrong>"})
    page = Tree(report._repr_html_()).root
    tags = {n.tag for n in _walk(page)}
    assert "script" not in tags and "i" not in tags  # the user's strings stay text
    assert "<script>alert(1)</script>" in page.all_text() and "<i>mine</i>" in page.all_text()
    assert "<b>net.py</b>:7" in page.all_text() and "dW = 3 * W  # <wrong>" in page.all_text()
    assert not any(n.tag == "b" and n.all_text() == "net.py" for n in _walk(page))
    md = report._repr_markdown_()
    assert "<script>" not in md and "&lt;script&gt;" in md and "a\\|b" in md


def _walk(node: Node):
    for c in node.children:
        yield c
        yield from _walk(c)


@dataclass(frozen=True)
class LineBlame:
    """Shaped as gradcheck.blame's findings: the line where a parameter's gradient goes wrong."""

    file: str = ""
    line: int | None = None
    function: str = ""
    source: str = ""
    equals: str = ""
    should_be: str = ""
    reason: str = ""


LOCATED = LineBlame(file="mlp.py", line=31, function="backward", source="dh = dout @ W2.T",
                    equals="dL/dh", should_be="dL/dz = dL/dh * relu'(z): relu'(z) is missing")


@pytest.mark.parametrize("blame, where, source, notes", [
    (None, None, None, []),
    (LOCATED, "mlp.py:31 in backward", "dh = dout @ W2.T",
     ["there it equals dL/dh", "it should be dL/dz = dL/dh * relu'(z): relu'(z) is missing"]),
    ({"file": "net.py", "line": 12, "source": "dW1 = X.T @ dh"}, "net.py:12", "dW1 = X.T @ dh", []),
    ("net.py:12: dW1 = X.T @ dh", "", "net.py:12: dW1 = X.T @ dh", []),
    (LineBlame(reason="the gradient is computed inside a compiled library"), None, None,
     ["no line blamed: the gradient is computed inside a compiled library"]),
])
def test_the_blamed_line_is_shown_when_the_result_has_one(buggy, blame, where, source, notes) -> None:
    p = with_blame(replace(buggy["W1"]), blame)
    report = Report(parameters=(p,), references=buggy.references)
    page = Tree(report_html(report)).root
    finding = page.find("div", class_="gc-finding")[0]
    assert [n.all_text() for n in finding.find("p", class_="gc-blame-note")] == notes
    md = report_markdown(report)
    assert all(f"- {n}" in html.unescape(md.replace("\\", "")) for n in notes)
    if where is None:
        assert not finding.find("p", class_="gc-blame") and not finding.find("pre")
        assert "blamed line" not in md
        return
    assert finding.find("p", class_="gc-blame")[0].all_text() == f"blamed line: {where}"
    assert finding.find("pre", class_="gc-line")[0].all_text() == source
    assert "blamed line" in md and f"`{source}`" in md


def test_an_object_blame_with_other_names_is_read_too(buggy) -> None:
    class Blame:
        filename, lineno, source = "mlp.py", 31, "db1 = dh.sum(axis=1)"

    p = with_blame(replace(buggy["b1"]), Blame())
    page = Tree(report_html(Report(parameters=(p,), references=()))).root
    assert page.find("p", class_="gc-blame")[0].all_text() == "blamed line: mlp.py:31"
    assert page.find("pre", class_="gc-line")[0].all_text() == "db1 = dh.sum(axis=1)"


def test_a_layer_report_renders_the_same_way() -> None:
    def affine_forward(x, w, b):
        return x @ w + b, (x, w, b)

    def affine_backward(dout, cache):  # a planted bug: dw from dout.T @ x, the transpose of x.T @ dout
        x, w, b = cache
        return dout @ w.T, (dout.T @ x).T * 2, dout.sum(axis=0)

    rng = np.random.default_rng(3)
    report = gradcheck.check_layer(affine_forward, affine_backward,
                                   {"x": rng.normal(size=(4, 3)), "w": rng.normal(size=(3, 5)),
                                    "b": rng.normal(size=5)}, against="numeric")
    assert [p.name for p in report.failures] == ["w"] and report["w"].diagnosis == "scaled"
    page = Tree(report._repr_html_()).root
    assert [f.attrs["data-parameter"] for f in page.find("div", class_="gc-finding")] == ["w"]
    assert len([r for r in page.find("div", class_="gc-finding")[0].find("rect") if r.find("title")]) == 15
    assert "scaled x2" in page.all_text()


def test_a_layer_whose_backward_returns_none_shows_missing() -> None:
    def forward(x, w):
        return x @ w, (x, w)

    def backward(dout, cache):
        x, w = cache
        return dout @ w.T, None

    rng = np.random.default_rng(4)
    report = gradcheck.check_layer(forward, backward, (rng.normal(size=(2, 3)), rng.normal(size=(3, 2))),
                                   against="numeric")
    page = Tree(report._repr_html_()).root
    finding = page.find("div", class_="gc-finding")[0]
    assert finding.attrs["data-parameter"] == "[1]" and "still a stub" in finding.all_text()


# ----------------------------------------------------------------- Markdown


def test_markdown_has_the_verdict_the_table_and_the_heatmaps_as_images(buggy) -> None:
    md = buggy._repr_markdown_()
    lines = md.splitlines()
    assert lines[0].startswith("**\u2717 gradient check FAILED (2 of 4 parameters wrong)")
    header = next(n for n, line in enumerate(lines) if line.startswith("| parameter |"))
    assert lines[header + 1] == "|" + "---|" * 8
    assert [line.split(" | ")[0] for line in lines[header + 2:header + 6]] == ["| W1", "| b1", "| W2", "| b2"]
    images = re.findall(r"!\[relative error per element of (\w+)\]\(data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)\)",
                        md)
    assert [name for name, _ in images] == ["W1", "b1"]
    assert base64.b64decode(images[0][1]).decode() == heatmap_svg(buggy["W1"])
    assert f"likely cause: {buggy['W1'].cause}" in html.unescape(md.replace("\\", ""))


# ----------------------------------------------------------------- cost


def test_showing_a_report_imports_no_matplotlib() -> None:
    code = ("import sys, numpy as np, gradcheck\n"
            "r = gradcheck.check(lambda p: float(np.sum(p ** 3)), lambda p: 2 * p, np.ones(3), against='numeric')\n"
            "before = set(sys.modules)\n"
            "assert not r.passed and '<svg' in r._repr_html_() and 'data:image/svg' in r._repr_markdown_()\n"
            "print(sorted(m for m in ('matplotlib', 'jax', 'sympy', 'tqdm') if m in set(sys.modules) - before))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ----------------------------------------------------------------- a real browser

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _browser() -> str | None:
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.mark.skipif(_browser() is None, reason="no headless browser installed (apt-get install chromium)")
def test_a_headless_browser_draws_the_report(buggy, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    page.write_text("<!doctype html><html><head><meta charset='utf-8'><title>gradcheck</title></head>"
                    "<body style='margin:16px;background:#fff'>" + buggy._repr_html_() + "</body></html>",
                    encoding="utf-8")
    shot = tmp_path / "notebook-report.png"
    cmd = [_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1000,700",
           page.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    assert _png_size(shot.read_bytes()) == (1000, 700)
    try:
        from PIL import Image  # comes with matplotlib; without it the size check above stands alone
    except ImportError:
        return
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    red_cells = (r > 150) & (g < 60) & (b < 80)      # the 12 wrong elements of W1 and b1 (and red text)
    blue_cells = (b - r > 10) & (b > 200)            # the 36 right ones and the legends' calm half
    assert red_cells.sum() > 12 * 26 * 26 and blue_cells.sum() > 36 * 26 * 26
