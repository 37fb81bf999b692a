"""The README's pictures, made from a trained model: segmentations of the bundled examples and the app's page.

    patchalign3d demo --out demo_out                  # trains the demo's model (about 8 minutes on 2 cores)
    python docs/make_images.py                        # demo_out/patchalign3d_demo.pt -> docs/images/
    python docs/make_images.py --checkpoint patchalign3d.pt --text-encoder openclip

Writes ``<example>_parts.png`` for each bundled example (prediction with the part names below), the three in
one row as ``examples_parts.png``, and
``app_chair_parts.png``: the app serving the same model, the chair uploaded and segmented in Debian's headless
chromium (Selenium + chromedriver; skipped with a message when they are missing). ``made_with.txt`` beside
them says which model made the pictures; the README's captions repeat it.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
from pathlib import Path

#: Part names asked of each bundled example (the demo's training categories use them too).
EXAMPLES = {
    "chair": ["seat", "back", "leg", "armrest"],
    "airplane": ["body", "wing", "tail", "engine"],
    "mug": ["body", "handle"],
}
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                  "--window-size=1280,1000"]


def describe_model(checkpoint: Path) -> str:
    """One line naming the model: its file, a digest of it, and the demo's summary when it is a demo's."""
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()[:12]
    line = f"{checkpoint.name} (sha256 {digest}…)"
    results = checkpoint.parent / "metrics.json"
    if results.is_file():
        import json

        metrics = json.loads(results.read_text())
        seen = metrics["splits"].get("test_seen", {}).get("model", {}).get("miou")
        kind = "quick smoke run" if metrics.get("quick") else "full demo"
        line += (f", trained by `patchalign3d demo` ({kind}, seed {metrics['seed']}, teacher "
                 f"{'pretrained' if metrics['teacher']['pretrained'] else 'random'}, text encoder "
                 f"{metrics['text_encoder']['spec']}" + (f"; test_seen mIoU {seen:.1f}" if seen is not None else "") + ")")
    return line


def segmentation_pictures(model, text, out: Path) -> list[Path]:
    from PIL import Image

    import patchalign3d as pa
    from patchalign3d.examples import example_path

    written = []
    for name, parts in EXAMPLES.items():
        seg = pa.segment_mesh(example_path(name), parts, model=model, text=text)
        written.append(seg.to_png(out / f"{name}_parts.png", title=f"{name}: {', '.join(parts)}"))
    # one row of all of them, for the README
    pictures = [Image.open(p).convert("RGB") for p in written]
    row = Image.new("RGB", (sum(p.width for p in pictures), max(p.height for p in pictures)), "white")
    x = 0
    for picture in pictures:
        row.paste(picture, (x, 0))
        x += picture.width
    row.save(out / "examples_parts.png")
    return [*written, out / "examples_parts.png"]


def app_screenshot(model, text, out: Path) -> Path | None:
    """The app's page after segmenting the bundled chair; None (and a message) without chromium or selenium."""
    import shutil

    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec
        from selenium.webdriver.support.ui import WebDriverWait
    except ImportError:
        chromium = None
    if not (chromium and driver_path):
        print("no app screenshot: needs selenium and Debian's chromium + chromium-driver", file=sys.stderr)
        return None
    from patchalign3d.app import AppSegmenter
    from patchalign3d.app.ui import build_app, launch
    from patchalign3d.examples import example_path

    app = build_app(AppSegmenter(model, text))
    launch(app, port=None, block=False)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    with tempfile.TemporaryDirectory() as profile:
        for flag in CHROMIUM_FLAGS + [f"--user-data-dir={profile}"]:
            options.add_argument(flag)
        browser = webdriver.Chrome(service=Service(driver_path), options=options)
        try:
            wait = WebDriverWait(browser, 300, poll_frequency=0.5)
            browser.get(app.local_url)
            upload = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#shape input[type=file]")))
            upload.send_keys(str(example_path("chair")))
            wait.until(lambda d: "chair.ply" in d.find_element(By.ID, "shape").text.replace("\n", ""))
            browser.find_element(By.CSS_SELECTOR, "#part-names textarea, #part-names input").send_keys(
                ", ".join(EXAMPLES["chair"]))
            browser.find_element(By.ID, "run").click()
            wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#downloads a[href*='chair_parts.glb']")))
            viewer = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#viewer canvas")))
            wait.until(lambda _: _coloured_fraction(viewer.screenshot_as_png) > 0.05)  # the viewer has drawn
            path = out / "app_chair_parts.png"
            browser.save_screenshot(str(path))
        finally:
            browser.quit()
            app.close()
    return path


def _coloured_fraction(png: bytes) -> float:
    import io

    import numpy as np
    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return float((rgb.max(-1) - rgb.min(-1) > 60).mean())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="demo_out/patchalign3d_demo.pt",
                   help="the model (default: the demo's, written by `patchalign3d demo --out demo_out`)")
    p.add_argument("--text-encoder", default=None, help="default: the one the checkpoint was trained with")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "images"))
    p.add_argument("--no-app", action="store_true", help="only the segmentation pictures")
    args = p.parse_args(argv)
    checkpoint = Path(args.checkpoint)
    if not checkpoint.is_file():
        p.error(f"--checkpoint {checkpoint}: no such file; run `patchalign3d demo --out demo_out` first, or give "
                "--checkpoint PATH")
    import patchalign3d as pa

    model = pa.load_model(checkpoint)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = segmentation_pictures(model, args.text_encoder, out)
    if not args.no_app:
        shot = app_screenshot(model, args.text_encoder, out)
        written += [shot] if shot else []
    made_with = f"Made by docs/make_images.py with {describe_model(checkpoint)}.\n"
    (out / "made_with.txt").write_text(made_with)
    for path in written:
        print(f"wrote {path}")
    print(made_with, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
