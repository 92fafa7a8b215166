"""The report in a real browser (headless Chromium): no console error, every thumbnail
decoded, hostile data did not run, and a screenshot.

Chromium is a system package: ``scripts/system-deps.sh`` (run by ``scripts/test.sh``)
installs Debian's ``chromium`` when it is missing.
"""

import json
import os
import re
import shutil
import subprocess
import threading
from functools import partial
from http.server import HTTPServer, SimpleHTTPRequestHandler

import pytest

from spacy_m3el.visualize import render_report

HARNESS = """<!DOCTYPE html><html><body><pre id="result">pending</pre>
<iframe id="report" src="report.html" width="1200" height="900"></iframe>
<script>
document.getElementById("report").addEventListener("load", function () {
  var page = this.contentDocument, images = Array.prototype.slice.call(page.images);
  document.getElementById("result").textContent = JSON.stringify({
    images: images.length,
    broken: images.filter(function (i) { return !(i.complete && i.naturalWidth > 0); }).length,
    pwned: Boolean(window.__pwned || this.contentWindow.__pwned),
    scripts: page.getElementsByTagName("script").length,
    errors: page.querySelectorAll("section.doc.has-error").length
  });
});
</script></body></html>"""


def chromium() -> str:
    for name in (os.environ.get("M3EL_CHROMIUM", ""), "chromium", "chromium-browser"):
        if name and shutil.which(name):
            return shutil.which(name)
    pytest.fail(
        "Headless Chromium is needed for the browser test: run `bash scripts/system-deps.sh` "
        "(apt-get install -y chromium) or set M3EL_CHROMIUM to a Chromium binary."
    )


@pytest.fixture
def served(tmp_path, kb_and_docs):
    kb, docs, gold_docs = kb_and_docs
    (tmp_path / "report.html").write_text(render_report(docs, gold_docs, kb), encoding="utf8")
    (tmp_path / "harness.html").write_text(HARNESS, encoding="utf8")
    handler = partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", tmp_path
    server.shutdown()
    server.server_close()


def run_chromium(*args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    flags += ["--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000"]
    return subprocess.run([chromium(), *flags, *args], capture_output=True, text=True, timeout=120)


def test_report_in_headless_chromium(served):
    url, folder = served
    result = run_chromium("--dump-dom", f"{url}/harness.html")
    found = re.search(r'<pre id="result">([^<]*)</pre>', result.stdout)
    assert found, result.stderr[-2000:]
    checks = json.loads(found.group(1).replace("&quot;", '"'))
    assert checks["images"] >= 3 and checks["broken"] == 0
    assert checks["pwned"] is False and checks["scripts"] == 0
    assert checks["errors"] == 2
    console = [line for line in result.stderr.splitlines() if "CONSOLE" in line]
    assert not [line for line in console if "report.html" in line], console
    screenshot = folder / "report.png"
    shot = run_chromium(
        f"--screenshot={screenshot}", "--window-size=1200,900", f"{url}/report.html"
    )
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", shot.stderr[-2000:]
