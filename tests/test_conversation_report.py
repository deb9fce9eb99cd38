"""The conversation report: its content without a browser, then rendered in headless Chromium.

The browser tests drive Chromium over the DevTools protocol through a pipe
(``--remote-debugging-pipe``: JSON messages separated by NUL bytes on file descriptors 3
and 4), which needs no websocket client and no open port. That protocol reports what the
command-line switches cannot: each console message with its level, uncaught exceptions,
the browser's own errors (a resource that failed to load) and every request the page
makes, apart from the browser's background traffic. They skip, with the reason, where no
Chromium is installed (CI: ``apt-get install -y chromium``).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import html
import json
import os
import queue
import re
import shutil
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, f1_score

from fusionkit.conversation_report import conversation_report

LABELS = ["happy", "sad", "neutral", "angry"]
MODALITIES = ["audio", "text", "visual"]
NASTY = "<script>alert('x')</script> & \"quotes\" <b>bold</b>"


@dataclass(frozen=True)
class Prediction:
    """A stand-in with every attribute of ``PredictionLike``."""

    dialogue: str
    utterances: list[str]
    labels: list[str]
    probabilities: np.ndarray
    label_names: list[str]
    true_labels: list[str | None]
    speakers: list[str] | None
    texts: list[str | None] | None
    modalities: list[str]
    reliance: np.ndarray | None
    if_absent: dict[str, list[str]] = field(default_factory=dict)
    if_absent_drop: dict[str, np.ndarray] = field(default_factory=dict)


def predictions(
    n: int = 5, *, labelled: bool = True, reliance: bool = True, seed: int = 0
) -> list[Prediction]:
    """``n`` random dialogues of 2-9 utterances with unique utterance ids; texts and a
    dialogue id with markup in them; some true labels and texts missing."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        t = int(rng.integers(2, 10))
        probs = rng.dirichlet(np.ones(len(LABELS)), size=t)
        labels = [LABELS[k] for k in probs.argmax(-1)]
        truth = [
            LABELS[k] if labelled and rng.random() > 0.2 else None for k in rng.integers(0, 4, t)
        ]
        texts = [None if rng.random() < 0.2 else f"words {i}.{k}" for k in range(t)]
        texts[0] = NASTY
        absent = {m: [LABELS[k] for k in rng.integers(0, 4, t)] for m in MODALITIES}
        out.append(
            Prediction(
                dialogue=f"dlg<{i}>&" if i == 1 else f"dialogue_{i}",
                utterances=[f"utt_{i}_{k}" for k in range(t)],
                labels=labels,
                probabilities=probs,
                label_names=LABELS,
                true_labels=truth,
                speakers=[f"spk{k % 2}" for k in range(t)],
                texts=texts,
                modalities=MODALITIES,
                reliance=rng.dirichlet(np.ones(len(MODALITIES)), size=t) if reliance else None,
                if_absent=absent,
                if_absent_drop={m: rng.uniform(-0.2, 0.6, t) for m in MODALITIES},
            )
        )
    return out


class Page(HTMLParser):
    """What the tests read back from the HTML: every element's attributes, the text under
    each class, and the body rows (cell texts) of each table by its class."""

    VOID = ("br", "meta", "link", "img", "input")

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, dict]] = []
        self.elements: list[tuple[str, dict]] = []
        self.by_class: dict[str, list[str]] = {}
        self.tables: dict[str, list[list[str]]] = {}
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.elements.append((tag, attrs))
        if tag in self.VOID:
            return
        self.stack.append((tag, attrs))
        tags = [t for t, _ in self.stack]
        if tag == "tr" and "tbody" in tags:
            table = next(a for t, a in reversed(self.stack) if t == "table")
            self.tables.setdefault(table.get("class", ""), []).append([])
        elif tag in ("td", "th") and "tbody" in tags:
            self.row.append("")

    @property
    def row(self) -> list[str]:
        table = next(a for t, a in reversed(self.stack) if t == "table")
        return self.tables[table.get("class", "")][-1]

    def handle_endtag(self, tag):
        while self.stack and self.stack.pop()[0] != tag:
            pass

    def handle_data(self, data):
        for _, attrs in self.stack:
            for cls in (attrs.get("class") or "").split():
                self.by_class.setdefault(cls, []).append(data)
        if any(t in ("td", "th") for t, _ in self.stack) and any(
            t == "tbody" for t, _ in self.stack
        ):
            self.row[-1] += data

    def text(self, cls: str) -> list[str]:
        return self.by_class.get(cls, [])


def test_every_utterance_appears_once_in_order_and_every_text_is_escaped():
    preds = predictions(6)
    out = conversation_report(preds, title="Calls <Q3> & more")
    page = Page(out)
    assert page.text("uid") == [u for p in preds for u in p.utterances]
    assert "<title>Calls &lt;Q3&gt; &amp; more</title>" in out
    assert NASTY not in out and html.escape(NASTY) in out
    assert page.text("txt").count(NASTY) == len(preds)  # read back as the original text
    assert "dlg&lt;1&gt;&amp;" in out and "dlg<1>&" in page.text("did")
    assert page.text("txt").count("—") == sum(t is None for p in preds for t in p.texts)


def test_nothing_is_fetched_and_nothing_runs():
    out = conversation_report(predictions(4), title="t")
    lowered = out.lower()
    for banned in ("http:", "https:", "//", "<script", "@import", "url(", "@font-face", "<iframe"):
        assert banned not in lowered.replace(html.escape(NASTY).lower(), ""), banned
    for tag, attrs in Page(out).elements:
        assert "src" not in attrs, tag
        assert not any(k.startswith("on") for k in attrs), (tag, attrs)
        href = attrs.get("href")
        assert href is None or href.startswith("#") or href == "data:,", href


def test_scores_match_sklearn_on_the_labelled_utterances():
    preds = predictions(8)
    out = conversation_report(preds, title="t")
    page = Page(out)
    y = [t for p in preds for t in p.true_labels]
    yhat = [a for p in preds for a in p.labels]
    keep = [i for i, t in enumerate(y) if t is not None]
    y, yhat = [y[i] for i in keep], [yhat[i] for i in keep]
    f1 = f1_score(y, yhat, labels=LABELS, average=None, zero_division=0)
    rows = page.tables["f1"]
    assert [r[0].strip() for r in rows] == LABELS
    np.testing.assert_allclose([float(r[1]) for r in rows], 100 * f1, atol=0.05)
    matrix = [[int(c) for c in r[1:]] for r in page.tables["cm"]]
    assert matrix == confusion_matrix(y, yhat, labels=LABELS).tolist()
    assert out.index('class="f1"') < out.index('class="cm"') < out.index("<details")


def test_scores_only_where_some_label_is_known():
    with_labels = conversation_report(predictions(3), title="t")
    without = conversation_report(predictions(3, labelled=False), title="t")
    assert "Per-class F1" in with_labels and 'class="cm"' in with_labels
    assert "Per-class F1" not in without and 'class="cm"' not in without
    assert "No true labels" in without and 'class="ok"' not in without
    assert 'class="bad"' not in without


def test_reliance_bars_follow_the_reliance_and_undefined_is_said_once():
    preds = predictions(3)
    reliance = preds[2].reliance.copy()
    reliance[1] = np.nan  # e.g. no modality present: no bar
    prior = np.linspace(0.05, 0.6, len(reliance))
    preds[2] = PredictionWithPrior(**{**preds[2].__dict__, "reliance": reliance}, prior_share=prior)
    out = conversation_report(preds, title="t")
    widths = [float(w) for w in re.findall(r'<i class="m\d" style="width:([\d.]+)%"', out)]
    expected = [100 * r for p in preds for row in p.reliance for r in row if r > 0]
    np.testing.assert_allclose(widths, expected, atol=0.05)
    page = Page(out)
    bars = [a for _, a in page.elements if a.get("class") == "rb"]
    assert len(bars) == sum(len(p.utterances) for p in preds) - 1
    nan_row = len(preds[0].utterances) + len(preds[1].utterances) + 1
    assert page.tables["utts"][nan_row][6] == "—"  # the reliance cell
    titles = [a["title"] for a in bars[-len(prior) + 1 :]]
    assert [t.split("prior ")[1].split("%")[0] for t in titles] == [
        f"{100 * v:.0f}" for v in np.delete(prior, 1)
    ]
    assert "not defined" not in out
    none = conversation_report(predictions(3, reliance=False), title="t")
    assert none.count("reliance not defined for this fusion") == 1 and 'class="rb"' not in none


@dataclass(frozen=True)
class PredictionWithPrior(Prediction):
    """With the prior's share of the precision (t,), which the report shows apart."""

    prior_share: np.ndarray | None = None


def test_labels_without_a_modality_that_differ_are_highlighted():
    preds = predictions(4)
    preds[0].if_absent["text"][1] = None  # not computed there: shown as such, not counted
    page = Page(conversation_report(preds, title="t"))
    changed = [
        f"{m}: {p.if_absent[m][k]}"
        for p in preds
        for k in range(len(p.utterances))
        for m in MODALITIES
        if p.if_absent[m][k] not in (None, p.labels[k])
    ]
    shown = [" ".join(s.split()[:2]) for s in page.text("chg")]
    assert shown == changed
    assert page.text("none").count("text: —") == 1
    flips = [np.mean([a != b for a, b in zip(p.if_absent["audio"], p.labels)]) for p in preds]
    sizes = [len(p.labels) for p in preds]
    audio_row = page.tables["mods"][0]
    assert audio_row[2] == f"{100 * np.average(flips, weights=sizes):.0f}%"


def test_large_inputs_collapse_and_have_a_table_of_contents():
    preds = predictions(200, seed=1)
    out = conversation_report(preds, title="t", open_dialogues=3)
    details = [a for tag, a in Page(out).elements if tag == "details"]
    assert len(details) == 200 and [("open" in a) for a in details] == [True] * 3 + [False] * 197
    anchors = re.findall(r'<a href="#(d\d+)">', out)
    ids = set(re.findall(r'id="(d\d+)"', out))
    assert len(anchors) == 200 and set(anchors) == ids
    per_utterance = len(out.encode()) / sum(len(p.utterances) for p in preds)
    assert per_utterance < 1500, per_utterance


def test_inconsistent_predictions_fail_naming_the_dialogue():
    p = predictions(2)[1]
    bad = Prediction(**{**p.__dict__, "labels": p.labels[:-1]})
    with pytest.raises(ValueError, match=r"dlg<1>&.*labels"):
        conversation_report([bad], title="t")
    unknown = Prediction(**{**p.__dict__, "true_labels": ["bored"] * len(p.utterances)})
    with pytest.raises(ValueError, match="bored"):
        conversation_report([unknown], title="t")
    with pytest.raises(ValueError, match="no dialogue"):
        conversation_report([], title="t")


# --- in a browser ---------------------------------------------------------------------------

CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no chromium binary on PATH (Debian/Ubuntu: apt-get install -y chromium)",
)


class Chromium:
    """Headless Chromium driven over the DevTools protocol through a pipe (fds 3 and 4)."""

    def __init__(self, profile: str, width: int = 1280, height: int = 900):
        to_browser, from_us = os.pipe()
        to_us, from_browser = os.pipe()
        # a small Python puts the browser's pipe ends on fds 3 and 4, then becomes the
        # browser; moved above 9 first, so that neither is already 3 or 4 and overwritten
        to_browser, from_browser = (high_fd(fd) for fd in (to_browser, from_browser))
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                PLUMB,
                str(to_browser),
                str(from_browser),
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--remote-debugging-pipe",
                f"--user-data-dir={profile}",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-extensions",
                "--host-resolver-rules=MAP * ~NOTFOUND",  # a stray request fails fast
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(to_browser, from_browser),
            start_new_session=True,
        )
        os.close(to_browser), os.close(from_browser)
        self.writer = os.fdopen(from_us, "wb", buffering=0)
        self.messages: queue.Queue = queue.Queue()
        self.events: list[dict] = []
        self.last_id = 0
        threading.Thread(target=self._read, args=(os.fdopen(to_us, "rb"),), daemon=True).start()
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=True)
        self.call(
            "Emulation.setDeviceMetricsOverride",
            session=True,
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )

    def _read(self, pipe):
        buffer = b""
        while chunk := pipe.read1(1 << 16):
            buffer += chunk
            *complete, buffer = buffer.split(b"\0")
            for message in complete:
                self.messages.put(json.loads(message))
        self.messages.put(None)

    def _next(self, deadline: float) -> dict:
        message = self.messages.get(timeout=max(0.01, deadline - time.monotonic()))
        if message is None:
            raise RuntimeError("chromium closed the pipe")
        return message

    def call(self, method: str, *, session: bool = False, timeout: float = 10, **params):
        """Send one command and return its result; events that arrive meanwhile are kept."""
        self.last_id += 1
        message = {"id": self.last_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        self.writer.write(json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while (reply := self._next(deadline)).get("id") != self.last_id:
            self.events.append(reply)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    def open(self, url: str, settle: float = 0.3) -> None:
        """Navigate and wait for the load event, then a little for late messages."""
        self.call("Page.navigate", session=True, url=url)
        deadline = time.monotonic() + 10
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            self.events.append(self._next(deadline))
        end = time.monotonic() + settle
        while time.monotonic() < end:
            try:
                self.events.append(self._next(end))
            except queue.Empty:
                break

    def evaluate(self, expression: str):
        result = self.call(
            "Runtime.evaluate", session=True, expression=expression, returnByValue=True
        )
        return result["result"].get("value")

    def screenshot(self) -> bytes:
        data = self.call(
            "Page.captureScreenshot", session=True, format="png", captureBeyondViewport=True
        )
        return base64.b64decode(data["data"])

    def errors(self) -> list[str]:
        """Console errors and assertions, uncaught exceptions and the browser's own errors."""
        out = []
        for e in self.events:
            method, params = e.get("method"), e.get("params", {})
            if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                out.append(f"console.{params['type']}: {[a.get('value') for a in params['args']]}")
            elif method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                out.append(
                    f"exception: {details.get('exception', {}).get('description', details['text'])}"
                )
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                out.append(f"log: {params['entry']['text']} {params['entry'].get('url', '')}")
        return out

    def requests(self) -> list[str]:
        return [
            e["params"]["request"]["url"]
            for e in self.events
            if e.get("method") == "Network.requestWillBeSent"
        ]

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, queue.Empty, OSError):
            self.call("Browser.close", timeout=5)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)  # the session this test started, by its id
            self.proc.wait()


PLUMB = """import os, sys
to_browser, from_browser = int(sys.argv[1]), int(sys.argv[2])
os.dup2(to_browser, 3), os.dup2(from_browser, 4), os.close(to_browser), os.close(from_browser)
os.execv(sys.argv[3], sys.argv[3:])
"""


def high_fd(fd: int) -> int:
    """``fd`` moved to a descriptor number of 10 or more."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return moved


@pytest.fixture
def browser(tmp_path):
    chromium = Chromium(str(tmp_path / "profile"))
    yield chromium
    chromium.close()


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@needs_chromium
def test_report_renders_in_chromium(browser, tmp_path):
    preds = predictions(12, seed=2)
    path = tmp_path / "report.html"
    path.write_text(conversation_report(preds, title="Browser check"), encoding="utf-8")
    browser.open(path.as_uri())
    expected = [u for p in preds for u in p.utterances]
    assert (
        browser.evaluate("[...document.querySelectorAll('td.uid')].map(e => e.textContent)")
        == expected
    )
    assert browser.evaluate("document.querySelectorAll('details[open]').length") == 3
    texts = browser.evaluate("[...document.querySelectorAll('td.txt')].map(e => e.textContent)")
    assert texts.count(NASTY) == len(preds)  # escaped markup is text, not elements
    # following a table-of-contents link opens a collapsed dialogue
    browser.evaluate("document.querySelector('a[href=\"#d7\"]').click()")
    time.sleep(0.2)
    assert browser.evaluate("document.getElementById('d7').closest('details').open") is True
    shot = browser.screenshot()
    (tmp_path / "report.png").write_bytes(shot)
    width, height = png_size(shot)
    assert 1200 <= width <= 1280 and height > 900 and len(shot) > 10_000  # less a scrollbar
    # every utterance is drawn once every dialogue is opened
    browser.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
    shown = browser.evaluate("document.body.innerText")
    assert all(u in shown for u in expected)
    assert browser.errors() == []
    assert [u for u in browser.requests() if not u.startswith("file:")] == []
    assert browser.requests() == [path.as_uri()]


@needs_chromium
def test_the_browser_checks_catch_a_bad_page(browser, tmp_path):
    """The checks above would see an error, an exception or a fetch had the page any."""
    path = tmp_path / "bad.html"
    path.write_text(
        "<!DOCTYPE html><html><head><title>bad</title>"
        '<link rel="stylesheet" href="https://fonts.example.invalid/a.css"></head>'
        '<body><img src="http://127.0.0.1:9/x.png">'
        "<script>console.error('deliberate'); throw new Error('boom')</script></body></html>"
    )
    browser.open(path.as_uri())
    errors = browser.errors()
    assert any("deliberate" in e for e in errors) and any("boom" in e for e in errors)
    assert any("Failed to load resource" in e for e in errors)
    external = [u for u in browser.requests() if not u.startswith("file:")]
    assert sorted(external) == ["http://127.0.0.1:9/x.png", "https://fonts.example.invalid/a.css"]
