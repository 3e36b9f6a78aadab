"""Screenshots of a Snakemake HTML report in headless Chromium, one per page a reader opens.

The report is a single-page React app: a plain `chromium --screenshot` only ever shows its
first screen. Its components keep the app in a global `app` whose `setView` picks the menu
(category, subcategory) and the content (an image or an HTML page by its data URI); the
entries are in the global `results` and the menu tree in `categories`. For each page this
writes a copy of the report with a small script appended that calls `app.setView` for the
entry whose path ends with the given suffix, then lets Chromium shoot it (virtual time, so
the script has run). Offline: no network is used, the report embeds everything.

    python benchmarks/report_screenshots.py results/report.html /tmp/shots \\
        comparison=/report/comparison.html dvh=/report/dvh/phantom_002.png

writes /tmp/shots/first.png (the report as it opens) and one PNG per name=suffix.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

_SCRIPT = """
<script>
window.addEventListener("load", () => setTimeout(() => {
  const suffix = %s;
  const path = Object.keys(results).find((k) => k.endsWith(suffix));
  if (!path) { document.title = "NOT FOUND " + suffix; return; }
  let category, subcategory;
  for (const [c, subs] of Object.entries(categories)) {
    for (const [s, entries] of Object.entries(subs)) {
      if (JSON.stringify(entries).includes(JSON.stringify(path))) { category = c; subcategory = s; }
    }
  }
  const mime = results[path].mime_type || "";
  app.setView({navbarMode: "subcategory", category: category, subcategory: subcategory,
               content: mime.startsWith("image/") ? "img" : "html",
               contentPath: results[path].data_uri, resultPath: path});
}, 500));
</script>
"""


def chromium_screenshot(page: Path, png: Path, size: str = "1600,1000", chromium: str = "chromium") -> None:
    """One headless screenshot of a local page (own throw-away profile, no GPU, no sandbox)."""
    with tempfile.TemporaryDirectory() as profile:
        cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               f"--user-data-dir={profile}", "--virtual-time-budget=8000", "--hide-scrollbars",
               f"--window-size={size}", f"--screenshot={png}", page.resolve().as_uri()]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    if done.returncode != 0 or not png.is_file():
        sys.exit(f"chromium failed on {page} (exit {done.returncode}): {done.stderr[-500:]}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("pages", nargs="*", help="name=path-suffix of a report entry")
    parser.add_argument("--size", default="1600,1000", help="window width,height in px")
    args = parser.parse_args(argv)
    if shutil.which("chromium") is None:
        sys.exit("chromium not found: install Debian's chromium package")
    html = args.report.read_text(encoding="utf-8")
    args.out.mkdir(parents=True, exist_ok=True)
    chromium_screenshot(args.report, args.out / "first.png", args.size)
    with tempfile.TemporaryDirectory() as tmp:
        for item in args.pages:
            name, _, suffix = item.partition("=")
            if not name.isidentifier() or not suffix:
                sys.exit(f"page {item!r}: expected name=path-suffix, e.g. comparison=/report/comparison.html")
            page = Path(tmp) / f"{name}.html"
            head, tag, tail = html.rpartition("</body>")
            page.write_text(head + _SCRIPT % json.dumps(suffix) + tag + tail, encoding="utf-8")
            chromium_screenshot(page, args.out / f"{name}.png", args.size)
            print(args.out / f"{name}.png")


if __name__ == "__main__":
    main()
