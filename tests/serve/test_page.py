"""The page in a real headless browser (Debian's chromium): ask, wait, check what it shows."""

from __future__ import annotations

import os
import re

import pytest

from isograd.serve import ServeOptions, create_app
from tests.serve import browser
from tests.serve.conftest import FakeDetector
from tests.serve.server import post, running


def unavailable(why: str) -> None:
    """Skip (a user without the browser), or fail where CI requires it."""
    if os.environ.get("ISOGRAD_REQUIRE_BROWSER") == "1":
        pytest.fail(why + " (ISOGRAD_REQUIRE_BROWSER=1)")
    pytest.skip(why)


@pytest.fixture(scope="module")
def driver():
    why = browser.missing()
    if why:
        unavailable(why)
    d = browser.chromium()
    yield d
    d.quit()


def alpha(css: str) -> float:
    """The alpha of a css rgba() colour (1 for rgb())."""
    nums = [float(x) for x in re.findall(r"[0-9.]+", css)]
    return nums[3] if len(nums) == 4 else 1.0


def test_page_shows_the_answer_its_token_shading_and_verdict(driver, tiny):
    question = "What is the capital of France?"
    app = create_app(*tiny, ServeOptions(model_name="tiny"), detector=FakeDetector())
    with running(app) as url:
        shown = browser.ask(driver, url, question)
        ref = post(url, "/v1/chat/completions", {
            "model": "tiny", "temperature": 0, "max_tokens": 64, "token_uncertainty": True,
            "messages": [{"role": "user", "content": question}]}).json()["choices"][0]
    unc = ref["uncertainty"]
    assert shown["error"] == ""
    assert [t[0] for t in shown["tokens"]] == [t["text"] for t in unc["tokens"]]
    assert shown["answer"].strip() == ref["message"]["content"]
    for k in ("p", "epistemic", "aleatoric", "total"):
        assert float(shown[k]) == pytest.approx(unc[k], rel=2e-3, abs=1e-4), k
    verdict = "abstain" if unc["abstain"] else "answer"
    assert shown["verdict"].startswith(verdict) and "P(wrong)" in shown["verdict"]
    # each token shaded by its epistemic term relative to the answer's largest (alpha 0.75)
    top = max(t["epistemic"] for t in unc["tokens"])
    for (_, css, title), t in zip(shown["tokens"], unc["tokens"]):
        # the browser keeps alpha in 1/255 steps
        assert alpha(css) == pytest.approx(0.75 * t["epistemic"] / top, abs=1 / 255 + 1e-6)
        assert title.startswith("p_t ")


def test_without_the_browser_skip_names_the_packages_or_ci_fails(monkeypatch):
    monkeypatch.setattr(browser, "CHROMIUM", "/nonexistent/chromium")
    why = browser.missing()
    assert why is not None and "chromium chromium-driver" in why
    monkeypatch.delenv("ISOGRAD_REQUIRE_BROWSER", raising=False)
    with pytest.raises(pytest.skip.Exception, match="chromium chromium-driver"):
        unavailable(why)
    monkeypatch.setenv("ISOGRAD_REQUIRE_BROWSER", "1")
    with pytest.raises(pytest.fail.Exception, match="ISOGRAD_REQUIRE_BROWSER"):
        unavailable(why)
