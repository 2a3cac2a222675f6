"""`snakemake --report` (issue #6): every figure and table of a run is in the report with a
caption saying what it shows and which paper figure or table it reproduces, and a browser
opening the report shows every figure.

The browser is Debian's headless Chromium (tests/support/browser.py), installed with apt-get when
missing; the test clicks through the report as a reader would: each category, each
subcategory, the eye button of each result, and checks that the image it shows decoded.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import pytest

from support import browser
from conftest import copy_run, snakemake, tiny_config

pytestmark = pytest.mark.workflow

PAPER = re.compile(r"Li et al\. 2016|Wang et al\. 2018|Beyond the two papers|Not in the papers")
NO_CAPTION = "has no caption of its own"


@pytest.fixture(scope="module")
def report(tiny_run, tmp_path_factory) -> tuple[Path, Path]:
    run = copy_run(tiny_run, tmp_path_factory.mktemp("report") / "run")
    result = snakemake(run, "--report", "results/report.html", configfile=run / "config.yaml")
    # A caption that is not valid reStructuredText (|x| reads as a substitution) still yields a
    # report, with the caption garbled: docutils only says so on stderr.
    assert "(ERROR/" not in result.stdout + result.stderr, (result.stdout + result.stderr)[-3000:]
    return run, run / "results" / "report.html"


@pytest.fixture(scope="module")
def page(report):
    reason = browser.skip_reason()
    if reason:
        pytest.skip(reason)
    with browser.Browser(width=1600, height=1100) as b:
        b.open(report[1].as_uri())
        b.wait_for("typeof results === 'object' && typeof categories === 'object'")
        yield b


def _expected(run: Path) -> dict[str, list[str]]:
    out = run / "results" / tiny_config()["experiment"]
    shown = next(f for f in tiny_config()["figures"]["formats"] if f in ("png", "svg", "jpg"))
    return {"figures": sorted(str(p.relative_to(run)) for p in (out / "figures").glob(f"*.{shown}")),
            "tables": sorted(str(p.relative_to(run)) for p in (out / "tables").glob("*.csv"))}


def test_report_holds_every_figure_and_table_with_a_caption(report, page):
    run, _ = report
    results = page.evaluate("results")
    expected = _expected(run)
    assert expected["figures"] and expected["tables"]
    missing = [p for group in expected.values() for p in group if p not in results]
    assert not missing, f"not in the report: {missing}"
    bad = {}
    for path in expected["figures"] + expected["tables"]:
        caption = re.sub(r"<[^>]+>", "", results[path]["caption"] or "").strip()
        if NO_CAPTION in caption or not PAPER.search(caption):
            bad[path] = caption[:120]
    assert not bad, "captions that do not say which paper figure/table they reproduce:\n" + \
        "\n".join(f"{k}: {v!r}" for k, v in bad.items())


def _click(page, selector_js: str) -> bool:
    return page.evaluate(f"(() => {{ const el = {selector_js}; if (!el) return false; el.click(); return true; }})()")


def _link(text: str) -> str:
    return f"[...document.querySelectorAll('a')].find(a => a.innerText.trim() === {json.dumps(text)})"


def _shown_images(page) -> dict[str, bool]:
    """filename -> loaded, for the result images on the page (the report's images are data
    URIs that carry their file name; the Snakemake logo is one too)."""
    shown = {}
    for img in page.images():
        match = re.search(r";filename=([^;]+);", img["src"])
        if match and match.group(1) != "logo.svg":
            shown[match.group(1)] = img["loaded"]
    return shown


def test_browser_shows_every_figure(report, page, tmp_path):
    """Click every result's eye button, as a reader would, and check its image decoded."""
    run, html = report
    results = page.evaluate("results")
    categories = page.evaluate("categories")
    figures = {p for p in _expected(run)["figures"]}
    seen: dict[str, bool] = {}
    for category, subcategories in categories.items():
        for subcategory, paths in subcategories.items():
            wanted = [p for p in paths if p in figures]
            if not wanted:
                continue
            page.open(html.as_uri())
            page.wait_for("document.querySelectorAll('a').length > 3")
            assert _click(page, _link(category)), f"no menu entry for category {category!r}"
            if len(subcategories) > 1:
                page.wait_for(f"!!({_link(subcategory)})", timeout=10)
                assert _click(page, _link(subcategory)), f"no entry for {category} / {subcategory}"
            # A label with exactly two values is drawn as a toggle above a single row (Snakemake's
            # report): every setting of the toggles shows its own rows.
            page.wait_for("document.querySelectorAll('a[iconname=eye]').length > 0", timeout=10)
            toggles = page.evaluate("""(() => { const groups = {};
                for (const r of document.querySelectorAll('input[type=radio]')) (groups[r.name] ||= []).push(r.id);
                return Object.values(groups); })()""")
            settings = list(itertools.product(*toggles))
            rows = 0
            for setting in settings:
                for radio in setting:
                    assert _click(page, f"document.getElementById({json.dumps(radio)})")
                n_eyes = page.evaluate("document.querySelectorAll('a[iconname=eye]').length")
                rows += n_eyes
                for i in range(n_eyes):
                    before = json.dumps(sorted(seen))
                    assert _click(page, f"document.querySelectorAll('a[iconname=eye]')[{i}]")
                    try:  # until the image of this row replaced the previous one and finished loading
                        page.wait_for(f"""[...document.images].some(i => {{
                            const m = i.src.match(/;filename=([^;]+);/);
                            return m && m[1] !== 'logo.svg' && !{before}.includes(m[1]) && i.complete; }})""",
                                      timeout=15)
                    except TimeoutError:
                        pass  # reported below as a figure the report never showed
                    seen.update(_shown_images(page))
            assert rows >= len(paths), f"{category} / {subcategory}: {rows} rows over {len(settings)} toggle settings for {len(paths)} results"
    names = {results[p]["filename"]: p for p in figures}
    not_shown = sorted(p for name, p in names.items() if name not in seen)
    broken = sorted(names[name] for name, ok in seen.items() if name in names and not ok)
    if not_shown or broken:
        page.screenshot(tmp_path / "report.png")
    assert not not_shown, f"figures the report never showed: {not_shown}"
    assert not broken, f"figures whose image did not load: {broken} (screenshot {tmp_path / 'report.png'})"
