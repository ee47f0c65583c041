"""The output dir's lock and the repairs a run makes after one that died."""

import os
import subprocess
import sys
import time

import pytest

from pipeline import workspace
from pipeline.configs import PipelineConfig


def test_a_held_lock_names_its_holder(tmp_path):
  config = PipelineConfig(output_dir=str(tmp_path))
  with workspace.exclusive(config):
    with pytest.raises(workspace.OutputDirBusy, match=f"PID {os.getpid()}, started"):
      with workspace.exclusive(config):
        pass
  with workspace.exclusive(config):  # released on exit
    pass


def test_the_kernel_releases_a_dead_holders_lock(tmp_path):
  lock = tmp_path / workspace.LOCK_FILE
  # A process takes the lock and dies without releasing it.
  subprocess.run([sys.executable, "-c", (
      "import fcntl, os; fd = os.open(%r, os.O_RDWR | os.O_CREAT); "
      "fcntl.flock(fd, fcntl.LOCK_EX); os._exit(9)") % str(lock)], check=False)
  with workspace.exclusive(PipelineConfig(output_dir=str(tmp_path))):
    pass


def test_a_metadata_store_elsewhere_is_locked_too(tmp_path):
  shared = str(tmp_path / "shared" / "metadata.sqlite")
  a = PipelineConfig(output_dir=str(tmp_path / "a"), metadata_path=shared)
  b = PipelineConfig(output_dir=str(tmp_path / "b"), metadata_path=shared)
  with workspace.exclusive(a):
    with pytest.raises(workspace.OutputDirBusy, match="metadata.sqlite is in use"):
      with workspace.exclusive(b):
        pass


def test_orphaned_artifact_dirs_are_moved_aside(tmp_path):
  config = PipelineConfig(output_dir=str(tmp_path))
  root = tmp_path / "pipeline"
  for rel in ("Trainer/model/7/file", "Trainer/.system/executor_execution/7/x",
              "Evaluator/evaluation/9/y"):
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_text("old")
  lines = workspace.move_orphans(config)  # no metadata.sqlite: none is known
  assert len(lines) == 1 and "does not know 3 artifact directories" in lines[0]
  assert not (root / "Trainer" / "model" / "7").exists()
  [moved] = os.listdir(tmp_path / workspace.ORPHANS_DIR)
  assert (tmp_path / workspace.ORPHANS_DIR / moved / "Trainer" / "model" / "7" /
          "file").read_text() == "old"
  assert workspace.move_orphans(config) == []  # nothing left to move


def test_recover_removes_a_dead_summary_write(tmp_path):
  (tmp_path / "summary.json.tmp").write_text("{")
  workspace.recover(PipelineConfig(output_dir=str(tmp_path)), "test")
  assert not (tmp_path / "summary.json.tmp").exists()


def test_an_unreadable_store_is_one_clear_error(tmp_path):
  (tmp_path / "metadata.sqlite").write_bytes(b"not a database")
  with pytest.raises(workspace.MetadataUnreadable, match="file is not a database"):
    workspace.recover(PipelineConfig(output_dir=str(tmp_path)), "test")



def _store(config):
  """An empty SQLite ML Metadata store at the config's path."""
  from ml_metadata import metadata_store
  from ml_metadata.proto import metadata_store_pb2
  from results import metadata
  connection = metadata.connection_config(config.metadata_uri, readonly=False)
  connection.sqlite.connection_mode = (  # and create the file
      metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE_OPENCREATE)
  store = metadata_store.MetadataStore(connection)
  store.put_execution_type(metadata_store_pb2.ExecutionType(name="Trainer"))
  return store


def _add(store, config, *states):
  """Executions in `states`, each with an output dir named by its id, as TFX
  writes them."""
  from ml_metadata.proto import metadata_store_pb2
  type_id = store.get_execution_type("Trainer").id
  ids = store.put_executions([metadata_store_pb2.Execution(
      type_id=type_id, last_known_state=state) for state in states])
  for eid in ids:
    os.makedirs(os.path.join(config.pipeline_root_uri, "Trainer", "model", str(eid)))


def test_closing_an_interrupted_run_cancels_what_ran_and_what_failed_after_the_stop(tmp_path):
  from ml_metadata.proto import metadata_store_pb2
  execution = metadata_store_pb2.Execution
  config = PipelineConfig(output_dir=str(tmp_path))
  store = _store(config)
  _add(store, config, execution.FAILED, execution.COMPLETE)  # before the stop
  time.sleep(0.05)
  asked_at = time.time()
  time.sleep(0.01)
  # After it: a failure the interrupt caused, and what was still running.
  _add(store, config, execution.FAILED, execution.RUNNING)

  lines = workspace.close_interrupted(config, "interrupted", failed_since=asked_at)

  states = {e.id: e.last_known_state for e in store.get_executions()}
  assert states == {1: execution.FAILED, 2: execution.COMPLETE,
                    3: execution.CANCELED, 4: execution.CANCELED}
  assert len(lines) == 2 and all("marked CANCELED" in l for l in lines)
  left = os.listdir(os.path.join(config.pipeline_root_uri, "Trainer", "model"))
  assert sorted(left) == ["1", "2"]  # the closed executions' partial outputs are gone


def test_without_a_stop_time_a_failure_stays_a_failure(tmp_path):
  from ml_metadata.proto import metadata_store_pb2
  execution = metadata_store_pb2.Execution
  config = PipelineConfig(output_dir=str(tmp_path))
  store = _store(config)
  _add(store, config, execution.FAILED, execution.RUNNING)
  workspace.close_interrupted(config, "its run died")  # a dead run's recovery
  assert [e.last_known_state for e in store.get_executions()] == [
      execution.FAILED, execution.CANCELED]
