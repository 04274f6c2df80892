defmodule DynamicSrv.Cluster.MisconfigTest do
  use ExUnit.Case, async: true

  alias DynamicSrv.Cluster.Misconfig

  @repeat Misconfig.absent_repeat_ms()

  test "an absent service warns at once, then every absent_repeat_ms, and once when listed again" do
    m = Misconfig.new()
    assert {m, :warn} = Misconfig.absent(m, true, 0)
    assert {m, :none} = Misconfig.absent(m, true, @repeat - 1)
    assert {m, :warn} = Misconfig.absent(m, true, @repeat)
    assert {m, :none} = Misconfig.absent(m, true, @repeat + 1)
    assert {m, :listed_again} = Misconfig.absent(m, false, @repeat + 2)
    assert {m, :none} = Misconfig.absent(m, false, @repeat + 3)
    # Absent again soon after: a service that flaps is warned about once per repeat, not on
    # every other poll, and "listed again" follows only a warning.
    assert {m, :none} = Misconfig.absent(m, true, @repeat + 4)
    assert {m, :none} = Misconfig.absent(m, false, @repeat + 5)
    assert {m, :warn} = Misconfig.absent(m, true, 2 * @repeat)
    assert {_m, :listed_again} = Misconfig.absent(m, false, 2 * @repeat + 1)
    assert @repeat == 5 * 60_000
  end

  @healthy %{
    alive?: true,
    node: :"a@x.y",
    longnames: true,
    epmd_module: DynamicSrv.Epmd,
    named_at_boot?: true,
    start_epmd: "false"
  }

  test "node problems" do
    assert Misconfig.node_problems(@healthy, "s") == []

    assert [{:not_distributed, _}] =
             Misconfig.node_problems(%{@healthy | alive?: false, node: :nonode@nohost}, "s")

    assert [{:short_names, _}] = Misconfig.node_problems(%{@healthy | longnames: false}, "s")

    assert [{:stock_epmd, _}] = Misconfig.node_problems(%{@healthy | epmd_module: :erl_epmd}, "s")

    assert [{:epmd_daemon, _}] = Misconfig.node_problems(%{@healthy | start_epmd: nil}, "s")
    assert [{:epmd_daemon, _}] = Misconfig.node_problems(%{@healthy | start_epmd: "true"}, "s")
    # Distribution started later (Node.start/2): no daemon was started at boot.
    assert [] = Misconfig.node_problems(%{@healthy | start_epmd: nil, named_at_boot?: false}, "s")
  end
end
