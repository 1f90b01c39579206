"""Writes vega/plots.html, the page `dvc plots show` fills (`.dvc/config`'s
plots.html_template), with the Vega, Vega-Lite and vega-embed bundles from npm inlined, so every
plot renders offline and from any folder. Run it (it needs npm) after changing PACKAGES."""

from __future__ import annotations

import subprocess
import tarfile
import tempfile
from pathlib import Path

# DVC's specs declare Vega-Lite v5; vega-lite 5 needs vega 5, and vega-embed 6 embeds both.
PACKAGES = ["vega@5.33.1", "vega-lite@5.23.0", "vega-embed@6.29.0"]
PAGE = Path(__file__).with_name("plots.html")
# DVC replaces {refresh_tag} and {plot_divs}; the page has no {scripts}, where DVC would put
# its script tags that load Vega from a CDN. The charset: the bundles hold non-ASCII text.
HEAD = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
{refresh_tag}
<title>DVC Plot</title>
<style>
table { border-spacing: 15px; }
</style>
"""
TAIL = """</head>
<body>
{plot_divs}
</body>
</html>
"""


def bundle(package: str, folder: Path) -> str:
    """The minified browser bundle in `package`'s npm tarball, less its source-map comment."""
    packed = subprocess.run(
        ["npm", "pack", "--silent", package],
        cwd=folder,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()[-1]
    name = package.rsplit("@", 1)[0]
    with tarfile.open(folder / packed) as archive:
        code = archive.extractfile(f"package/build/{name}.min.js").read().decode()
    # A '</script' would end the inline script; DVC fills its placeholders wherever they are.
    for clash in ("</script", "{plot_divs}", "{refresh_tag}", "{scripts}"):
        if clash in code:
            raise SystemExit(f"error: {package} holds '{clash}', so it cannot be inlined")
    kept = "\n".join(line for line in code.splitlines() if not line.startswith("//# sourceMap"))
    return f"<!-- {package}, BSD-3-Clause: vega/LICENSE.{name} -->\n<script>\n{kept}\n</script>\n"


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        scripts = "".join(bundle(package, Path(folder)) for package in PACKAGES)
    PAGE.write_text(HEAD + scripts + TAIL, encoding="utf-8")
    print(f"{PAGE}: {PAGE.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
