defmodule DynamicSrv.Test.Mesh do
  @moduledoc false
  import ExUnit.Assertions

  alias DynamicSrv.Test.Peer

  @doc "Has every peer connect to every other with Node.connect/1 and waits for the full mesh."
  def connect_and_assert_full_mesh(peers) do
    names = Enum.map(peers, & &1.name)

    for peer <- peers do
      results = Peer.call(peer, DynamicSrv.Test.NodeAgent, :connect_all, [names])

      assert Enum.all?(results, fn {_node, ok} -> ok == true end),
             "#{peer.name}: #{inspect(results)}"
    end

    for peer <- peers do
      expected = Enum.sort(names -- [peer.name])

      assert eventually(fn -> Enum.sort(Peer.call(peer, Node, :list, [])) == expected end),
             "#{peer.name} sees #{inspect(Peer.call(peer, Node, :list, []))}, expected #{inspect(expected)}"
    end
  end

  @doc "Asserts the peer used our epmd module and that stock epmd could not have answered."
  def assert_no_epmd(peer) do
    facts = Peer.call(peer, DynamicSrv.Test.NodeAgent, :epmd_facts, [])
    assert facts.epmd_module == DynamicSrv.Epmd
    refute facts.erl_epmd_running
    assert facts.start_epmd == {:ok, [[~c"false"]]}
    # ERL_EPMD_PORT points at a port where nothing listens: asking epmd fails.
    assert {:error, _} = Peer.call(peer, :erl_epmd, :names, [~c"localhost"])
    facts
  end

  @doc "Polls `fun` until it returns true, up to `tries` times `interval_ms` (no timing asserted)."
  def eventually(fun, tries \\ 100, interval_ms \\ 50) do
    cond do
      fun.() ->
        true

      tries <= 1 ->
        false

      true ->
        Process.sleep(interval_ms)
        eventually(fun, tries - 1, interval_ms)
    end
  end
end
