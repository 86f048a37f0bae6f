"""The picture people look at: the TE network, edge width ~ TE, labelled with TE and lag."""
from __future__ import annotations

from pathlib import Path

import networkx as nx

from actors.common.storage import atomic_write_figure


def network_png(graph: nx.DiGraph, path: Path, *, title: str = "") -> Path:
    """Circular layout of the significant edges; nodes without edges are still drawn. Written atomically
    (0644), so a resumed job never finds half a picture."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = graph.number_of_nodes()
    fig, ax = plt.subplots(figsize=(4 + 0.4 * n, 4 + 0.4 * n))
    pos = nx.circular_layout(graph)
    te = [d["te"] for _, _, d in graph.edges(data=True)]
    top = max(te) if te else 1.0
    nx.draw_networkx_nodes(graph, pos, ax=ax, node_color="#cfe2f3", edgecolors="#1f4e79", node_size=900)
    nx.draw_networkx_labels(graph, pos, ax=ax, font_size=9)
    nx.draw_networkx_edges(graph, pos, ax=ax, width=[1 + 4 * t / top for t in te], arrowsize=18,
                           edge_color="#1f4e79", connectionstyle="arc3,rad=0.12", node_size=900)
    labels = {(s, t): f"{d['te']:.3f} (u={d['lag']})" for s, t, d in graph.edges(data=True)}
    nx.draw_networkx_edge_labels(graph, pos, edge_labels=labels, ax=ax, font_size=7, label_pos=0.3,
                                 connectionstyle="arc3,rad=0.12", node_size=900)
    ax.set_title(title or f"TE network ({graph.graph.get('correction', '')}, alpha={graph.graph.get('alpha', '')})")
    ax.axis("off")
    fig.tight_layout()
    atomic_write_figure(path, fig, dpi=120)
    plt.close(fig)
    return path
