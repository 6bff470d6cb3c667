defmodule HFBridge.Faults.RetryTest do
  use ExUnit.Case, async: true

  alias HFBridge.{Error, Retry}

  test "defaults and validation" do
    assert {:ok, %Retry{max_attempts: 10, base_delay: 100, max_delay: 5_000}} = Retry.new([])
    assert {:ok, %Retry{max_attempts: 0}} = Retry.new(max_attempts: 0)
    assert {:error, msg} = Retry.new(attempts: 3)
    assert msg =~ "unknown retry options [:attempts]"
    assert {:error, _} = Retry.new(max_delay: -1)
    assert {:error, _} = Retry.new(:nope)
    assert {:error, _} = Retry.new([1, 2])
  end

  test "delays grow exponentially up to the cap, with at most 20% jitter" do
    {:ok, policy} = Retry.new(base_delay: 100, max_delay: 1_000)

    for attempt <- 1..40 do
      full = min(1_000, 100 * Integer.pow(2, min(attempt - 1, 30)))
      d = Retry.delay(policy, attempt)
      assert d <= full and d >= full - div(full, 5), "attempt #{attempt}: #{d} vs #{full}"
    end
  end

  test "attempts are bounded" do
    {:ok, policy} = Retry.new(max_attempts: 2)
    assert Retry.allow?(policy, 0)
    assert Retry.allow?(policy, 1)
    refute Retry.allow?(policy, 2)
  end

  test "which errors are retryable" do
    assert Retry.retryable?(Error.from_grpc_status(14, "worker restarting"))
    assert Retry.retryable?(Error.new(:grpc, :unavailable, "the connection is gone"))
    assert Retry.retryable?(Error.new(:x, :y, "z", retryable: true))
    refute Retry.retryable?(Error.from_grpc_status(3, "bad argument"))
    refute Retry.retryable?(Error.from_grpc_status(16, "no token"))
    refute Retry.retryable?(Error.from_grpc_status(5, "not found"))
  end

  test "sessions reject invalid retry options up front" do
    assert_raise Error, ~r/retry/, fn ->
      HFBridge.stream("parquet", data_files: "x.parquet", retry: [bogus: 1], local: false)
    end
  end
end
