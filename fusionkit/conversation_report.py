"""A conversation report: a model's predictions as one self-contained HTML page.

``conversation_report(predictions, title=...)`` returns the page as a string. It holds its
CSS and SVG inline and nothing else: no script, no font, no image or style sheet to fetch,
so it opens offline, from a file, in any browser, and can be mailed as it is.

At the top, where any true label is known: accuracy and weighted F1, per-class F1 and the
confusion matrix (:func:`fusionkit.classification_report`). Then the modalities: a colour
legend, each modality's mean reliance and how often leaving it out changes the predicted
label. Then a table of contents and one collapsible section a dialogue (the first
``open_dialogues`` open), each a timeline of its utterances: id, speaker, text, predicted
emotion with its probability, true label and whether it matches, reliance as a small
stacked bar, and the label predicted without each modality with the change in the
predicted class's probability.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from fusionkit.batch import IGNORE_INDEX
from fusionkit.metrics import classification_report

__all__ = ["PredictionLike", "conversation_report"]

# Okabe-Ito (colour-blind safe) for modalities; Tableau 10 for emotions.
MODALITY_COLOURS = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442")
EMOTION_COLOURS = (
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
)


class PredictionLike(Protocol):
    """One dialogue's predictions, as the report reads them (t utterances, c classes).

    ``reliance`` (t, len(modalities)): how much each modality weighed in each prediction,
    rows summing to 1 (a row of NaN where undefined, e.g. no modality present); None where
    the fusion has no such split. ``if_absent[m]`` (t labels) and ``if_absent_drop[m]``
    (t,): the label predicted with modality m marked absent (None where not computed), and
    how much the predicted class's probability falls then (negative: it rises); both may be
    empty. An object may
    also carry ``prior_share`` (t,), the prior's share of the precision before the
    modalities' shares were renormalised, which the report shows beside the bar.
    """

    @property
    def dialogue(self) -> str: ...
    @property
    def utterances(self) -> list[str]: ...
    @property
    def labels(self) -> list[str]: ...
    @property
    def probabilities(self) -> np.ndarray: ...
    @property
    def label_names(self) -> list[str]: ...
    @property
    def true_labels(self) -> list[str | None]: ...
    @property
    def speakers(self) -> list[str] | None: ...
    @property
    def texts(self) -> list[str | None] | None: ...
    @property
    def modalities(self) -> list[str]: ...
    @property
    def reliance(self) -> np.ndarray | None: ...
    @property
    def if_absent(self) -> dict[str, list[str]]: ...
    @property
    def if_absent_drop(self) -> dict[str, np.ndarray]: ...


def conversation_report(
    predictions: Sequence[PredictionLike], *, title: str, open_dialogues: int = 3
) -> str:
    """The HTML page (a str) of ``predictions``, one :class:`PredictionLike` a dialogue, in
    order; the first ``open_dialogues`` dialogues are shown expanded, the others collapsed."""
    if not predictions:
        raise ValueError("predictions: no dialogue to report")
    label_names = list(predictions[0].label_names)
    modalities: list[str] = []
    for p in predictions:
        _check(p, label_names)
        modalities += [m for m in _get(p, "modalities", []) if m not in modalities]
    body = [
        f"<header><h1>{_e(title)}</h1>{_overview(predictions)}</header>",
        _scores(predictions, label_names),
        _modalities(predictions, modalities),
        _toc(predictions),
        "<main>",
        *(
            _dialogue(i, p, label_names, modalities, open_=i < open_dialogues)
            for i, p in enumerate(predictions)
        ),
        "</main>",
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'  # no favicon request
        f"<title>{_e(title)}</title><style>{_css(label_names, modalities)}</style></head>\n"
        "<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _get(p: PredictionLike, name: str, default):
    """An attribute the report can do without (older prediction objects lack it)."""
    value = getattr(p, name, None)
    return default if value is None else value


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _check(p: PredictionLike, label_names: list[str]) -> None:
    """Fail, naming the dialogue, where its fields disagree in length or labels."""
    t = len(p.utterances)
    where = f"predictions: dialogue {p.dialogue!r}"
    if list(p.label_names) != label_names:
        raise ValueError(f"{where}: label_names {list(p.label_names)} differ from {label_names}")
    if np.shape(p.probabilities) != (t, len(label_names)):
        raise ValueError(
            f"{where}: probabilities {np.shape(p.probabilities)}, expected {(t, len(label_names))}"
        )
    lengths = {"labels": p.labels, "true_labels": p.true_labels}
    lengths |= {k: _get(p, k, None) for k in ("speakers", "texts", "prior_share")}
    for name, values in lengths.items():
        if values is not None and len(values) != t:
            raise ValueError(f"{where}: {len(values)} {name} for {t} utterances")
    unknown = {y for y in [*p.labels, *p.true_labels] if y is not None} - set(label_names)
    if unknown:
        raise ValueError(f"{where}: labels {sorted(unknown)} are not among {label_names}")
    for kind in ("if_absent", "if_absent_drop"):
        for m, values in _get(p, kind, {}).items():
            if len(values) != t:
                raise ValueError(f"{where}: {len(values)} {kind}[{m!r}] for {t} utterances")
    reliance = _get(p, "reliance", None)
    if reliance is not None and np.shape(reliance) != (t, len(p.modalities)):
        raise ValueError(
            f"{where}: reliance {np.shape(reliance)}, expected {(t, len(p.modalities))}"
        )


def _css(label_names: list[str], modalities: list[str]) -> str:
    colours = [
        *(
            f".e{i}{{background:{c};fill:{c}}}"
            for i, c in enumerate(_cycle(EMOTION_COLOURS, len(label_names)))
        ),
        *(
            f".m{i}{{background:{c}}}"
            for i, c in enumerate(_cycle(MODALITY_COLOURS, len(modalities)))
        ),
    ]
    return "\n".join(
        [
            "body{font:14px/1.4 system-ui,sans-serif;margin:0 auto;max-width:1200px;"
            "padding:0 16px 40px;color:#222}",
            "h1{font-size:1.5em;margin:16px 0 4px}h2{font-size:1.15em;margin:20px 0 8px}",
            ".meta,.note{color:#555}.note{font-style:italic}",
            "table{border-collapse:collapse}td,th{padding:2px 6px;text-align:left;"
            "vertical-align:top}",
            ".scores{display:flex;flex-wrap:wrap;gap:32px;align-items:flex-start}",
            ".num{text-align:right;font-variant-numeric:tabular-nums}",
            ".f1bar{display:inline-block;height:8px;background:#4e79a7;vertical-align:middle}",
            ".cm td,.cm th{border:1px solid #ddd;text-align:center;min-width:2.5em}",
            ".cm td.diag{outline:2px solid #333;outline-offset:-2px}",
            ".lab{display:inline-block;padding:0 6px;border-radius:8px;color:#fff;"
            "text-shadow:0 0 2px #000}",
            ".sw{display:inline-block;width:12px;height:12px;border-radius:2px;"
            "vertical-align:middle;margin-right:4px}",
            "nav ol{columns:16em;padding-left:2.5em}nav li{break-inside:avoid}",
            "details.dlg{border:1px solid #ddd;border-radius:6px;margin:8px 0}",
            "details.dlg>summary{cursor:pointer;padding:6px 10px;background:#f6f6f6;"
            "display:flex;flex-wrap:wrap;gap:12px;align-items:center}",
            ".did{font-weight:600}.strip{height:14px;width:240px}",
            ".body{padding:4px 10px;scroll-margin-top:3em}",
            ".utts{width:100%}.utts td{border-top:1px solid #eee}",
            ".utts tr.miss{background:#fff1f0}.utts .uid{font-family:monospace;font-size:.9em}",
            ".txt{max-width:32em;overflow-wrap:anywhere}.none{color:#999}",
            ".ok{color:#2a7d2a}.bad{color:#c0392b;font-weight:600}",
            ".rb{display:inline-flex;width:90px;height:10px;border:1px solid #999;"
            "vertical-align:middle}.rb i{display:block;height:100%}",
            ".rel,.pl{white-space:nowrap}.wo{font-size:.85em;white-space:nowrap}",
            ".wo .chg{color:#c0392b;font-weight:600}",
            *colours,
        ]
    )


def _cycle(colours: Sequence[str], n: int) -> list[str]:
    return [colours[i % len(colours)] for i in range(n)]


def _overview(predictions: Sequence[PredictionLike]) -> str:
    t = sum(len(p.utterances) for p in predictions)
    known = sum(y is not None for p in predictions for y in p.true_labels)
    return (
        f'<p class="meta">{len(predictions)} dialogues · {t} utterances · '
        f"{known} with a true label</p>"
    )


def _scores(predictions: Sequence[PredictionLike], label_names: list[str]) -> str:
    """Accuracy, weighted F1, per-class F1 and the confusion matrix, where labels are known."""
    index = {n: i for i, n in enumerate(label_names)}
    y = np.array(
        [IGNORE_INDEX if t is None else index[t] for p in predictions for t in p.true_labels]
    )
    if (y == IGNORE_INDEX).all():
        return '<section id="scores"><p class="note">No true labels: no scores.</p></section>'
    pred = np.array([index[label] for p in predictions for label in p.labels])
    report = classification_report(pred, y, label_names)
    confusion = np.array(report.confusion)
    f1_rows = "".join(
        f'<tr><td><span class="sw e{i}"></span>{_e(n)}</td>'
        f'<td class="num">{report.per_class_f1[n]:.1f}</td>'
        f'<td><span class="f1bar" style="width:{report.per_class_f1[n]:.0f}px"></span></td>'
        f'<td class="num">{confusion[i].sum()}</td><td class="num">{confusion[:, i].sum()}</td>'
        "</tr>"
        for i, n in enumerate(label_names)
    )
    f1_table = (
        '<table class="f1"><caption>Per-class F1 (%)</caption><thead><tr><th>class</th>'
        "<th>F1</th><th></th><th>true</th><th>predicted</th></tr></thead>"
        f"<tbody>{f1_rows}</tbody></table>"
    )
    head = "".join(f"<th>{_e(n)}</th>" for n in label_names)
    rows = []
    for i, n in enumerate(label_names):
        total = max(int(confusion[i].sum()), 1)
        cells = []
        for j, count in enumerate(confusion[i]):
            alpha = count / total
            colour = "#fff" if alpha > 0.55 else "#222"
            diag = ' class="diag"' if i == j else ""
            cells.append(
                f'<td{diag} style="background:rgba(78,121,167,{alpha:.2f});color:{colour}"'
                f' title="true {_e(n)}, predicted {_e(label_names[j])}: {count}">{count}</td>'
            )
        rows.append(f"<tr><th>{_e(n)}</th>{''.join(cells)}</tr>")
    matrix = (
        '<table class="cm"><caption>Confusion matrix (rows: true, columns: predicted; '
        f"shade: share of the row)</caption><thead><tr><th></th>{head}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )
    return (
        '<section id="scores"><h2>Scores</h2>'
        f"<p>Accuracy <b>{report.accuracy:.2f}</b> · weighted F1 <b>{report.weighted_f1:.2f}</b>"
        f" over {report.support} labelled utterances.</p>"
        f'<div class="scores">{f1_table}{matrix}</div></section>'
    )


def _modalities(predictions: Sequence[PredictionLike], modalities: list[str]) -> str:
    """The colour legend, mean reliance and how often each modality's absence flips a label."""
    if not modalities:
        return ""
    legend = " ".join(
        f'<span><span class="sw m{i}"></span>{_e(m)}</span>' for i, m in enumerate(modalities)
    )
    rows = []
    for i, m in enumerate(modalities):
        shares, flips, drops = [], [], []
        for p in predictions:
            mods = list(_get(p, "modalities", []))
            reliance = _get(p, "reliance", None)
            if reliance is not None and m in mods:
                shares.append(np.asarray(reliance, dtype=float)[:, mods.index(m)])
            absent = _get(p, "if_absent", {})
            if m in absent:
                flips.append(
                    np.array([np.nan if a is None else a != b for a, b in zip(absent[m], p.labels)])
                )
                drops.append(np.asarray(_get(p, "if_absent_drop", {}).get(m, []), dtype=float))
        mean = _nanmean(shares)
        flip = _nanmean(flips)
        drop = _nanmean(drops)
        rows.append(
            f'<tr><td><span class="sw m{i}"></span>{_e(m)}</td>'
            f'<td class="num">{_pct(mean)}</td><td class="num">{_pct(flip)}</td>'
            f'<td class="num">{_signed(-drop)}</td></tr>'
        )
    undefined = any(_get(p, "reliance", None) is None for p in predictions)
    note = (
        '<p class="note">reliance not defined for this fusion (it weighs no modality by a '
        "precision)</p>"
        if undefined
        else ""
    )
    return (
        '<section id="modalities"><h2>Modalities</h2>'
        f'<p class="legend">{legend}</p>{note}'
        '<table class="mods"><thead><tr><th>modality</th><th>mean reliance</th>'
        "<th>label changes without it</th><th>mean Δp without it</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
        '<p class="note">Reliance: how much each prediction leaned on the modality; for a '
        "product-of-experts fusion, its expert's share of the posterior precision (the prior's "
        "share apart). Without it: the label predicted with the modality marked absent, and "
        "the change of the predicted class's probability (Δp).</p></section>"
    )


def _nanmean(parts: list[np.ndarray]) -> float:
    values = np.concatenate([np.asarray(v, dtype=float).ravel() for v in parts] or [[]])
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else math.nan


def _pct(x: float) -> str:
    return "—" if math.isnan(x) else f"{100 * x:.0f}%"


def _signed(x: float) -> str:
    return "—" if math.isnan(x) else f"{x:+.2f}".replace("-", "−")


def _toc(predictions: Sequence[PredictionLike]) -> str:
    items = []
    for i, p in enumerate(predictions):
        wrong = _wrong(p)
        status = "" if wrong is None else f", {wrong} wrong"
        items.append(
            f'<li><a href="#d{i}">{_e(p.dialogue)}</a> '
            f'<span class="meta">({len(p.utterances)}{status})</span></li>'
        )
    return f'<nav id="toc"><h2>Dialogues</h2><ol>{"".join(items)}</ol></nav>'


def _wrong(p: PredictionLike) -> int | None:
    """Mismatches among the labelled utterances; None where none is labelled."""
    pairs = [(a, b) for a, b in zip(p.labels, p.true_labels) if b is not None]
    return sum(a != b for a, b in pairs) if pairs else None


def _dialogue(
    i: int, p: PredictionLike, label_names: list[str], modalities: list[str], *, open_: bool
) -> str:
    """One dialogue: a summary line with a strip of its predicted emotions, then its table."""
    index = {n: k for k, n in enumerate(label_names)}
    optional = {
        "speaker": _get(p, "speakers", None) is not None,
        "text": _get(p, "texts", None) is not None,
        "reliance": _get(p, "reliance", None) is not None,
        "without each modality: label, Δp": bool(_get(p, "if_absent", {})),
    }
    head = ["#", "utterance", *[h for h in list(optional)[:2] if optional[h]]]
    head += ["predicted (p)", "true", *[h for h in list(optional)[2:] if optional[h]]]
    mods = list(_get(p, "modalities", []))
    colour = {m: modalities.index(m) for m in mods}
    rows = "".join(_row(p, k, index, mods, colour) for k in range(len(p.utterances)))
    table = (
        '<table class="utts"><thead><tr>'
        + "".join(f"<th>{h}</th>" for h in head)
        + f"</tr></thead><tbody>{rows}</tbody></table>"
    )
    return (
        f'<details class="dlg"{" open" if open_ else ""}>{_summary(p, index)}'
        f'<div class="body" id="d{i}">{table}</div></details>'
    )


def _summary(p: PredictionLike, index: dict[str, int]) -> str:
    """A dialogue's summary line: id, length, score and a strip of its predicted emotions
    (an SVG rectangle an utterance, a red mark under each wrong one)."""
    t, wrong = len(p.utterances), _wrong(p)
    known = sum(y is not None for y in p.true_labels)
    score = "" if wrong is None else f"<span>{known - wrong}/{known} correct</span>"
    strip = "".join(
        f'<rect x="{k}" width="1" height="2" class="e{index[label]}"/>'
        for k, label in enumerate(p.labels)
    ) + "".join(
        f'<rect x="{k}" y="2.3" width="1" height=".7" fill="#c0392b"/>'
        for k, (a, b) in enumerate(zip(p.labels, p.true_labels))
        if b is not None and a != b
    )
    marks = "" if wrong is None else ", red marks: wrong"
    return (
        f'<summary><span class="did">{_e(p.dialogue)}</span><span>{t} utterances</span>{score}'
        f'<svg class="strip" style="width:{min(240, 8 * max(t, 1))}px" '
        f'viewBox="0 0 {max(t, 1)} 3" preserveAspectRatio="none" role="img">'
        f"<title>predicted emotions in order{marks}</title>{strip}</svg></summary>"
    )


def _row(
    p: PredictionLike, k: int, index: dict[str, int], mods: list[str], colour: dict[str, int]
) -> str:
    """Utterance k of ``p`` as a table row (its cells as :func:`_dialogue`'s header says)."""
    predicted, true = p.labels[k], p.true_labels[k]
    cells = [f'<td class="num">{k + 1}</td>', f'<td class="uid">{_e(p.utterances[k])}</td>']
    speakers, texts = _get(p, "speakers", None), _get(p, "texts", None)
    if speakers is not None:
        cells.append(f"<td>{_e(speakers[k])}</td>")
    if texts is not None:
        text = texts[k]
        cells.append(
            '<td class="txt none">—</td>' if text is None else f'<td class="txt">{_e(text)}</td>'
        )
    prob = float(p.probabilities[k][index[predicted]])
    tag = f'<span class="lab e{index[predicted]}">{_e(predicted)}</span>'
    cells.append(f'<td class="pl">{tag} {prob:.2f}</td>')
    if true is None:
        cells.append('<td class="none">—</td>')
    else:
        ok = '<span class="ok">✓</span>' if true == predicted else '<span class="bad">✗</span>'
        tag = f'<span class="lab e{index[true]}">{_e(true)}</span>'
        cells.append(f'<td class="pl">{tag} {ok}</td>')
    reliance, prior = _get(p, "reliance", None), _get(p, "prior_share", None)
    if reliance is not None:
        bar = _bar(reliance[k], mods, colour, None if prior is None else prior[k])
        cells.append(f'<td class="rel">{bar}</td>')
    absent = _get(p, "if_absent", {})
    if absent:
        without = _without(k, predicted, mods, absent, _get(p, "if_absent_drop", {}))
        cells.append(f'<td class="wo">{without}</td>')
    miss = ' class="miss"' if true is not None and true != predicted else ""
    return f"<tr{miss}>{''.join(cells)}</tr>"


def _bar(row: np.ndarray, mods: list[str], colour: dict[str, int], prior: float | None) -> str:
    """A stacked bar of one utterance's reliance, the top modality named beside it."""
    row = np.asarray(row, dtype=float)
    if row.size == 0 or np.isnan(row).any():
        return '<span class="none">—</span>'
    parts = " · ".join(f"{m} {100 * r:.0f}%" for m, r in zip(mods, row))
    if prior is not None and not math.isnan(float(prior)):
        parts += f" (prior {100 * float(prior):.0f}% of the precision, apart)"
    segments = "".join(
        f'<i class="m{colour[m]}" style="width:{100 * r:.1f}%"></i>'
        for m, r in zip(mods, row)
        if r > 0
    )
    top = mods[int(row.argmax())]
    return f'<span class="rb" title="{_e(parts)}">{segments}</span> <small>{_e(top)}</small>'


def _without(
    k: int,
    predicted: str,
    mods: list[str],
    absent: dict[str, list[str]],
    drops: dict[str, np.ndarray],
) -> str:
    """Per modality: the label predicted without it (highlighted where it changes) and Δp."""
    items = []
    for m in mods:
        if m not in absent:
            continue
        label = absent[m][k]
        if label is None:  # not computed for this utterance
            items.append(f'<span class="none">{_e(m)}: —</span>')
            continue
        drop = float(drops[m][k]) if m in drops else math.nan
        changed = label != predicted
        cls = ' class="chg"' if changed else ""
        said = _e(label) if changed else "same"
        items.append(f"<span{cls}>{_e(m)}: {said} {_signed(-drop)}</span>")
    return "<br>".join(items)
