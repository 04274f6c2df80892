defmodule DynamicSrv.NameserversTest do
  use ExUnit.Case, async: true

  alias DynamicSrv.Nameservers

  defp inetrc(text) do
    file = Path.join(System.tmp_dir!(), "dsrv-inetrc-#{System.unique_integer([:positive])}")
    File.write!(file, text)
    on_exit(fn -> File.rm(file) end)
    file
  end

  test "reads nameserver entries in file order, port 53 by default, then alt_nameserver ones" do
    file =
      inetrc("""
      %% as the original library's README has it
      {lookup, [dns]}.
      {alt_nameserver, {10,0,0,9}}.
      {nameserver, {127,0,0,1}, 8600}.
      {nameserver, {0,0,0,0,0,0,0,1}}.
      {nameserver, {127,0,0,1}, 8600}.
      """)

    assert Nameservers.inetrc(file) == {:ok, file, "127.0.0.1:8600,[::1]:53,10.0.0.9:53"}
  end

  test "an inetrc without nameservers, unreadable, or malformed gives none" do
    assert Nameservers.inetrc(inetrc("{lookup, [dns]}.\n")) == :none
    assert Nameservers.inetrc(inetrc("{nameserver, {127,0,0,1}, 8600")) == :none
    assert Nameservers.inetrc(inetrc("{nameserver, {300,0,0,1}}.\n")) == :none
    assert Nameservers.inetrc(inetrc("{nameserver, {127,0,0,1}, 0}.\n")) == :none
    assert Nameservers.inetrc("/nonexistent/inetrc") == :none
  end

  test "precedence: the option, then DYNAMIC_SRV_NAMESERVERS, then the inetrc, then resolv.conf" do
    env = %{"DYNAMIC_SRV_NAMESERVERS" => "127.0.0.2:53"}
    assert Nameservers.source("127.0.0.3:53", env) == {:option, "127.0.0.3:53"}
    assert Nameservers.source(nil, env) == {:env, "127.0.0.2:53"}
    # This test VM has no inetrc.
    assert Nameservers.source(nil, %{}) == :resolv_conf
    assert Nameservers.environment(%{"ERL_DIST_PORT" => "1"}) == %{"ERL_DIST_PORT" => "1"}
  end
end
