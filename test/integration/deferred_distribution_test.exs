defmodule DynamicSrv.Integration.DeferredDistributionTest do
  # Found by an adversarial review (issue 14): the boot refusal must not end a running VM.
  use ExUnit.Case, async: false
  @moduletag :integration

  alias DynamicSrv.Test.Peer

  # -name is on the command line but distribution is deferred with the kernel parameter
  # `start_distribution false` (OTP's way to start it later, e.g. once the name is known).
  # Node.start/2 at runtime, while init is still {:starting, _} (an application's start/2,
  # a -s/-eval, a script), must return the error as for any runtime start.
  @tag timeout: 60_000
  test "Node.start/2 with -name and -kernel start_distribution false does not halt the VM" do
    peer =
      Peer.start!(
        "deferred@dyn.test",
        %{"ERL_DIST_PORT" => "abc", "DYNAMIC_SRV_NAMESERVERS" => "127.0.0.1:#{Peer.dead_port()}"},
        erl_args: ["-kernel", "start_distribution", "false"]
      )

    on_exit(fn -> Peer.stop(peer) end)
    assert Peer.call(peer, Node, :self, []) == :nonode@nohost

    result =
      try do
        Peer.call(peer, Node, :start, [:"deferred@dyn.test", :longnames], 10_000)
      catch
        kind, reason -> {:peer_died, kind, reason}
      end

    assert {:error, _} = result
    assert Peer.call(peer, :erlang, :node, []) == :nonode@nohost
  end
end
