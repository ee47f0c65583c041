"""The report's notebook, for users with Jupyter."""

import json
import os
from typing import Any, Dict

from components import evaluation
from results.run_view import RunView


def write_notebook(view: RunView, path: str) -> str:
  """A notebook over the run's TFMA and TFDV output, for users with Jupyter.

  It shows tables (pandas) and matplotlib figures, which render in any
  Jupyter (JupyterLab included), rather than TFMA's and TFDV's widgets,
  which need the classic notebook's extensions. With a baseline, TFX's
  Evaluator names the models, so the candidate is asked for by name.
  """
  artifacts = view.summary["artifacts"]
  candidate = (evaluation.CANDIDATE
               if view.evaluation.baseline_accuracy is not None else None)

  def code(src: str) -> Dict[str, Any]:
    return {"cell_type": "code", "metadata": {}, "execution_count": None,
            "outputs": [], "source": src}

  cells = [
      {"cell_type": "markdown", "metadata": {}, "source":
       "# mnist-tfx evaluation\nTFMA's metrics per digit, its confusion matrix and "
       "TFDV's statistics per split, for the run this report was made from. Open "
       "it with `.venv/bin/jupyter lab " + path + "` (or `jupyter notebook`)."},
      code("import os, warnings\n"
           "os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')\n"
           "warnings.simplefilter('ignore')  # TF/TFMA deprecation notices\n"
           "import matplotlib.pyplot as plt\n"
           "import pandas as pd\n"
           "import tensorflow_model_analysis as tfma\n"
           "import tensorflow_data_validation as tfdv\n"
           f"EVALUATION = {artifacts['Evaluator.evaluation']!r}\n"
           f"STATISTICS = {artifacts['StatisticsGen.statistics']!r}\n"
           f"MODEL_NAME = {candidate!r}  # 'candidate' when compared with a baseline"),
      code("result = tfma.load_eval_result(EVALUATION, model_name=MODEL_NAME)\n"
           "rows = []\n"
           "for slice_key, metrics in result.slicing_metrics:\n"
           "  values = metrics[''][''] if '' in metrics else next(iter(metrics.values()))['']\n"
           "  rows.append({'slice': dict(slice_key).get('label', 'overall'),\n"
           "               'accuracy': values['accuracy']['doubleValue'],\n"
           "               'examples': values['example_count']['doubleValue']})\n"
           "pd.DataFrame(rows).set_index('slice')"),
      code("from components import evaluation\n"
           "e = evaluation.load(EVALUATION)\n"
           "fig, ax = plt.subplots(figsize=(6, 5))\n"
           "ax.imshow(e.confusion_matrix, cmap='Blues')\n"
           "for (i, j), n in pd.DataFrame(e.confusion_matrix).stack().items():\n"
           "  ax.text(j, i, n, ha='center', va='center', fontsize=7)\n"
           "ax.set_xlabel('predicted'); ax.set_ylabel('true')\n"
           "ax.set_title(f'accuracy {e.accuracy:.4f}')\n"
           "plt.show()"),
      code("def stats(split):\n"
           "  s = tfdv.load_stats_binary(f'{STATISTICS}/Split-{split}/FeatureStats.pb')\n"
           "  return pd.DataFrame([{\n"
           "      'split': split, 'feature': '.'.join(f.path.step),\n"
           "      'min': f.num_stats.min, 'max': f.num_stats.max,\n"
           "      'mean': f.num_stats.mean, 'std': f.num_stats.std_dev,\n"
           "      'zeros': f.num_stats.num_zeros}\n"
           "      for f in s.datasets[0].features])\n"
           "pd.concat([stats('train'), stats('eval')]).set_index(['split', 'feature'])"),
  ]
  notebook = {"cells": cells, "metadata": {"kernelspec": {
      "name": "python3", "display_name": "Python 3", "language": "python"}},
              "nbformat": 4, "nbformat_minor": 5}
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(notebook, f, indent=1)
  return path
