"""Reading ML Metadata back: the newest execution id, the node of an execution."""

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from results import metadata


def _store(path):
  config = metadata_store_pb2.ConnectionConfig()
  config.sqlite.filename_uri = path
  config.sqlite.connection_mode = 3  # READWRITE_OPENCREATE
  return metadata_store.MetadataStore(config)


def test_max_execution_id_and_node_name(tmp_path):
  path = str(tmp_path / "m.sqlite")
  store = _store(path)
  assert metadata.max_execution_id(metadata.open_store(path)) == 0
  execution_type = store.put_execution_type(metadata_store_pb2.ExecutionType(name="t"))
  context_type = store.put_context_type(metadata_store_pb2.ContextType(name="node"))
  [context_id] = store.put_contexts([metadata_store_pb2.Context(
      type_id=context_type, name="mnist-tfx.Trainer")])
  ids = store.put_executions([metadata_store_pb2.Execution(type_id=execution_type)
                              for _ in range(3)])
  store.put_attributions_and_associations(
      [], [metadata_store_pb2.Association(context_id=context_id, execution_id=ids[1])])
  readonly = metadata.open_store(path)
  assert metadata.max_execution_id(readonly) == max(ids)
  assert metadata.node_name(readonly, ids[1]) == "Trainer"
  assert metadata.node_name(readonly, ids[0]) == f"execution {ids[0]}"
