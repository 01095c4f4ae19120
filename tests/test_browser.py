"""The prompt explorer as a user meets it: Voila serves apps/explorer.ipynb on localhost, Debian's chromium (driven by
Playwright, no browser download) types a prompt, presses Generate and checks that the 3D figure appears and changes.
The screenshot goes to outputs/browser/explorer.png (or $INSTANT3D_SCREENSHOT). `make browser` installs chromium."""
import os, shutil, signal, socket, subprocess, sys, time, urllib.request
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SHOT = Path(os.environ.get("INSTANT3D_SCREENSHOT", ROOT / "outputs" / "browser" / "explorer.png"))
ARGS = ["--no-sandbox", "--disable-gpu", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",  # software WebGL for plotly's 3D scene "--disable-dev-shm-usage", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-default-apps", "--disable-extensions"]

def free_port() -> int:
    with socket.socket() as s: s.bind(("127.0.0.1", 0)); return s.getsockname()[1]

@pytest.fixture(scope="module")
def voila_url(tmp_path_factory):
    if CHROMIUM is None: pytest.skip("chromium is not installed: `make browser` installs Debian's chromium (apt-get, needs root)")
    pytest.importorskip("playwright", reason="the playwright package (a dev requirement) is not installed")
    if shutil.which("voila", path=str(Path(sys.executable).parent)) is None: pytest.skip("voila (a dev requirement) is not installed")
    port = free_port()
    log = open(tmp_path_factory.mktemp("voila") / "voila.log", "w+")
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    cmd = [str(Path(sys.executable).parent / "voila"), "apps/explorer.ipynb", "--no-browser", "--Voila.ip=127.0.0.1", f"--port={port}",
           "--ServerApp.token=", "--ServerApp.password="]  # bound to 127.0.0.1 only
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 90
        while True:
            try: urllib.request.urlopen(url + "static/", timeout=2)
            except urllib.error.HTTPError: break  # the server answers (404 on a bare static/ is fine)
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    log.seek(0); pytest.fail(f"voila did not start on {url}: {log.read()[-2000:]}")
                time.sleep(0.5); continue
            break
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try: proc.wait(20)
        except subprocess.TimeoutExpired: os.killpg(proc.pid, signal.SIGKILL); proc.wait(10)
        log.close()

FINGERPRINT = """() => { const p = document.querySelector('.js-plotly-plot');
  if (!p || !p.data || !p.data.length || !p.data[0].x || !p.data[0].x.length) return null;
  const x = Array.from(p.data[0].x); return x.length + ':' + x.slice(0, 8).map(v => v.toFixed(4)).join(','); }"""

def test_explorer_in_chromium(voila_url, tmp_path):
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)  # Playwright gives it a fresh profile folder
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 1250})
            page.set_default_timeout(120_000)
            page.goto(voila_url, wait_until="domcontentloaded", timeout=180_000)
            page.wait_for_function(FINGERPRINT, timeout=180_000)  # the first object is drawn
            first = page.evaluate(FINGERPRINT)
            box = page.get_by_placeholder("a prompt (suggestions as you type)")
            box.fill("a blue cone wearing a scarf")
            page.get_by_role("button", name="Generate").click()
            page.wait_for_function(f"() => ({FINGERPRINT})() !== {first!r}", timeout=120_000)
            page.wait_for_function("() => document.body.innerText.includes('a blue cone wearing a scarf')", timeout=60_000)
            status = page.locator(".i3d-status").first.inner_text()
            assert "updated in" in status and "#2" in status, status
            assert page.locator("canvas").count() >= 1  # plotly's WebGL scene
            assert page.locator("a.i3d-download").first.get_attribute("href").startswith("data:model/gltf-binary;base64,")
            SHOT.parent.mkdir(parents=True, exist_ok=True)
            page.wait_for_timeout(500)
            page.screenshot(path=str(SHOT), full_page=True)
            print(f"screenshot: {SHOT} ({status})")
        finally:
            browser.close()
