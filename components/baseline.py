"""Resolver strategy: the latest blessed model *other than this run's candidate*,
and not one rolled back.

TFX's LatestBlessedModelStrategy breaks caching: in the run after the first
blessing, the candidate (reused from cache) is also the latest blessed model,
so the Evaluator's inputs gain a baseline they did not have before, the
Evaluator re-runs against the model itself, and the Pusher pushes the same
model again. Excluding the candidate gives a rerun with nothing changed the
same inputs as before, so every component is a cache hit.

The candidate comes in through `candidate=trainer.outputs['model']`: TFX
resolves a producer's channel within the current pipeline run only, while
the bare `model` and `model_blessing` channels span every run.
"""

from typing import Dict, List, Optional

from tfx import v1 as tfx

CANDIDATE_KEY = "candidate"
MODEL_KEY = "model"
BLESSING_KEY = "model_blessing"
# Set on a Model by `mnist-tfx rollback` (cleared by `promote`): a model taken
# out of service is never the next run's baseline.
ROLLED_BACK = "rolled_back"
# Custom properties the Evaluator sets on a ModelBlessing.
_BLESSED = "blessed"
_CURRENT_MODEL_ID = "current_model_id"


def latest_blessed_other(candidates: List[tfx.dsl.Artifact],
                         models: List[tfx.dsl.Artifact],
                         blessings: List[tfx.dsl.Artifact]
                         ) -> Dict[str, List[tfx.dsl.Artifact]]:
  exclude = {m.id for m in candidates}
  blessed = {b.get_int_custom_property(_CURRENT_MODEL_ID): b
             for b in blessings if b.get_int_custom_property(_BLESSED) == 1}
  for model in sorted(models, key=lambda m: m.id, reverse=True):
    if (model.id in blessed and model.id not in exclude
        and model.get_int_custom_property(ROLLED_BACK) != 1):
      return {CANDIDATE_KEY: candidates, MODEL_KEY: [model],
              BLESSING_KEY: [blessed[model.id]]}
  return {CANDIDATE_KEY: candidates, MODEL_KEY: [], BLESSING_KEY: []}


class LatestBlessedOtherModelStrategy(tfx.dsl.experimental.ResolverStrategy):
  """Inputs: `candidate`, `model`, `model_blessing` channels (see module doc)."""

  def resolve_artifacts(
      self, store, input_dict: Dict[str, List[tfx.dsl.Artifact]]
  ) -> Optional[Dict[str, List[tfx.dsl.Artifact]]]:
    del store  # Everything needed is in the resolved channels.
    return latest_blessed_other(input_dict.get(CANDIDATE_KEY, []),
                                input_dict.get(MODEL_KEY, []),
                                input_dict.get(BLESSING_KEY, []))


RESOLVER_ID = "latest_blessed_model_resolver"


def resolver_skipping_candidate(candidate: tfx.dsl.Channel) -> tfx.dsl.Resolver:
  """The resolver for local runs: the last blessed model but the candidate."""
  return tfx.dsl.Resolver(
      strategy_class=LatestBlessedOtherModelStrategy,
      **{CANDIDATE_KEY: candidate,
         MODEL_KEY: tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
         BLESSING_KEY: tfx.dsl.Channel(
             type=tfx.types.standard_artifacts.ModelBlessing)}).with_id(RESOLVER_ID)


def resolver_latest_blessed(candidate: tfx.dsl.Channel) -> tfx.dsl.Resolver:
  """TFX's own strategy: what KFP v2 can compile (it re-evaluates on a rerun)."""
  del candidate  # TFX's strategy cannot exclude it
  return tfx.dsl.Resolver(
      strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
      **{MODEL_KEY: tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
         BLESSING_KEY: tfx.dsl.Channel(
             type=tfx.types.standard_artifacts.ModelBlessing)}).with_id(RESOLVER_ID)


def mark_rolled_back(store, model_id: int, rolled_back: bool) -> bool:
  """Marks (or clears) a Model artifact in ML Metadata; False if none has that id.

  After `rollback` from B to A, the next run's baseline is A, not B: the
  resolver skips models marked here.
  """
  from ml_metadata.proto import metadata_store_pb2  # pylint: disable=g-import-not-at-top
  found = store.get_artifacts_by_id([model_id])
  if not found:
    return False
  artifact = found[0]
  artifact.custom_properties[ROLLED_BACK].CopyFrom(
      metadata_store_pb2.Value(int_value=int(rolled_back)))
  store.put_artifacts([artifact])
  return True
