"""``examples/quickstart.ipynb`` runs top to bottom in a fresh kernel and finds what its text says it finds.

The notebook is executed headless with nbclient, on this interpreter, with ``USER_SPARK_MODEL`` pointing at the
real all-MiniLM-L6-v2 weights (the hub is unreachable here): real weights make the search and the duplicates
meaningful, so the test checks results, not just that cells ran.
"""

from __future__ import annotations

import base64
import json
import os
import sys

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOTEBOOK = os.path.join(ROOT, "examples", "quickstart.ipynb")

# Appended to the executed copy only: reads the notebook's own variables back as JSON.
PROBE = """
import json
import user_spark
from pyspark.sql import functions as F
print(json.dumps({
    "user_spark_file": user_spark.__file__,
    "python": sys.executable,
    "hits": top[["id", "score"]].values.tolist(),
    "summary": dd.summary,
    "groups": sorted(
        sorted(int(i) for i in g)
        for g in dd.groups.groupBy("group_id").agg(F.collect_list("id")).toPandas().iloc[:, 1]
    ),
    "k": cl.k,
    "sizes": [int(s) for s in cl.summary.toPandas()["size"]],
    "plot_path": plot_path,
}))
"""


def test_committed_notebook_has_no_outputs() -> None:
    """Outputs stay out of git: they go stale and bloat diffs; the test below regenerates them."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


@pytest.mark.slow
def test_quickstart_notebook_executes(minilm_model: str, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USER_SPARK_MODEL", minilm_model)
    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebook's tempfile.mkdtemp() output lands here
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(PROBE))
    # Kernel "python3" resolves to this interpreter (jupyter_client swaps a bare "python" for sys.executable);
    # the probe checks it. cwd = examples/, as when a user opens the notebook there.
    client = NotebookClient(
        nb, kernel_name="python3", timeout=600, resources={"metadata": {"path": os.path.dirname(NOTEBOOK)}}
    )
    client.execute()  # raises CellExecutionError, with the cell and traceback, if any cell fails

    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not [o for o in cell.outputs if o.output_type == "error"], cell.source
    probe = json.loads("".join(o.get("text", "") for o in nb.cells[-1].outputs if o.output_type == "stream"))
    assert probe["python"] == sys.executable
    assert probe["user_spark_file"] == os.path.join(ROOT, "user_spark", "__init__.py")

    # "Почему гребцы опустили весла?" -> id 1, "Вдруг гребцы опустили весла и недвижно уставили очи."
    ids = [int(i) for i, _ in probe["hits"]]
    scores = [s for _, s in probe["hits"]]
    assert len(ids) == 5 and ids[0] == 1, probe["hits"]
    assert scores == sorted(scores, reverse=True) and scores[0] - scores[1] > 0.05

    # The three planted copies and nothing else: 1001 is exact (case, spaces), 1002 and 1003 near.
    assert probe["groups"] == [[9, 1003], [11, 1001, 1002]]
    counts = ("rows_in", "exact_duplicates", "near_duplicates", "rows_kept", "groups", "vector_rows", "pairs_found")
    assert {k: probe["summary"][k] for k in counts} == {
        "rows_in": 303,
        "exact_duplicates": 1,
        "near_duplicates": 2,
        "rows_kept": 300,
        "groups": 2,
        "vector_rows": 302,  # the exact copy is embedded once, with its group
        "pairs_found": 2,
    }

    assert probe["k"] == 6 and len(probe["sizes"]) == 6 and sum(probe["sizes"]) == 300

    # The plot is shown inline (a PNG in the cell's output), the same file write_plot wrote.
    images = [
        o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if "image/png" in o.get("data", {})
    ]
    assert len(images) == 1
    png = base64.b64decode(images[0]["data"]["image/png"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    with open(probe["plot_path"], "rb") as fh:
        assert fh.read() == png
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert width > 1000 and height > 400
