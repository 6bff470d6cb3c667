defmodule HFBridge.Broadway.CheckpointTest do
  use ExUnit.Case, async: true

  alias HFBridge.Broadway.Checkpoint
  alias HFBridge.Broadway.Checkpoint.File, as: Store

  setup do
    dir = Path.join(System.tmp_dir!(), "hf_bridge_ckpt_#{System.unique_integer([:positive])}")
    File.mkdir_p!(dir)
    on_exit(fn -> File.rm_rf!(dir) end)
    %{tmp_dir: dir}
  end

  test "file store: nothing, then a token, then done", %{tmp_dir: dir} do
    store = {Store, Path.join(dir, "nested")}
    assert {:ok, nil} = Checkpoint.load(store, "P.p0of1")
    assert :ok = Checkpoint.save(store, "P.p0of1", {:token, "abc-_123"})
    assert {:ok, {:token, "abc-_123"}} = Checkpoint.load(store, "P.p0of1")
    assert {:ok, nil} = Checkpoint.load(store, "P.p1of2")
    assert :ok = Checkpoint.save(store, "P.p0of1", :done)
    assert {:ok, :done} = Checkpoint.load(store, "P.p0of1")
    assert File.ls!(Path.join(dir, "nested")) == ["P.p0of1.checkpoint"]
  end

  test "a malformed file is an error, not a fresh start", %{tmp_dir: dir} do
    File.write!(Store.path(dir, "k"), "garbage")

    assert {:error, %HFBridge.Error{code: :checkpoint_failed, message: message}} =
             Checkpoint.load({Store, dir}, "k")

    assert message =~ "malformed"
  end

  test "a failing store becomes an HFBridge.Error", %{tmp_dir: dir} do
    blocker = Path.join(dir, "file")
    File.write!(blocker, "")

    assert {:error, %HFBridge.Error{code: :checkpoint_failed}} =
             Checkpoint.save({Store, Path.join(blocker, "sub")}, "k", :done)
  end
end
