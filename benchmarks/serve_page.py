"""The screenshot docs/serve-page.png: `isograd serve`'s page after one question, in headless
Debian chromium, with the embedded SmolLM2-135M-Instruct (CPU, greedy).

    python benchmarks/serve_page.py [--question "..."] [--out docs/serve-page.png]
"""

from __future__ import annotations

import argparse

import torch
from tests.serve import browser
from tests.serve.server import running

from isograd.lm import load_model
from isograd.serve import ServeOptions, create_app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--question", default="What is the capital of Australia?")
    ap.add_argument("--out", default="docs/serve-page.png")
    args = ap.parse_args()
    why = browser.missing()
    if why:
        raise SystemExit(why)
    torch.set_num_threads(1)
    model, tok = load_model(args.model, dtype="fp32")
    driver = browser.chromium(width=820, height=820)
    try:
        with running(create_app(model, tok, ServeOptions(model_name=args.model))) as url:
            shown = browser.ask(driver, url, args.question, timeout=300)
            driver.save_screenshot(args.out)
    finally:
        driver.quit()
    print(f"{args.question!r} -> {shown['answer']!r} (p {shown['p']}, epistemic "
          f"{shown['epistemic']}, aleatoric {shown['aleatoric']}); wrote {args.out}")


if __name__ == "__main__":
    main()
