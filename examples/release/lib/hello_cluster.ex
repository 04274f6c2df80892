defmodule HelloCluster do
  @moduledoc """
  What `bin/hello_cluster rpc` can ask a running node:

      bin/hello_cluster rpc "IO.inspect(HelloCluster.status())"
  """

  @doc "This node's name, code loading mode, OS pid and connected nodes, computed on the node."
  @spec status() :: %{
          node: node(),
          code_mode: :embedded | :interactive,
          os_pid: String.t(),
          nodes: [node()]
        }
  def status do
    %{
      node: node(),
      code_mode: :code.get_mode(),
      os_pid: System.pid(),
      nodes: Enum.sort(Node.list())
    }
  end
end
