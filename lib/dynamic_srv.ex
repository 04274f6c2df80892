defmodule DynamicSrv do
  @moduledoc """
  Cluster Elixir and Erlang nodes without the epmd daemon, on dynamically assigned ports,
  discovering peers through DNS SRV and A/AAAA records.

      # environment of every node (or rel/env.sh.eex)
      export ELIXIR_ERL_OPTIONS="-start_epmd false -epmd_module Elixir.DynamicSrv.Epmd"
      export ERL_DIST_PORT=24501
      export DYNAMIC_SRV_NAMESERVERS=127.0.0.1:8600

  `DynamicSrv.Epmd` is the epmd module the VM uses to listen and to find peers. See the
  README for every environment variable and deployment recipes.
  """
end
