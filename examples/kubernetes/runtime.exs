# config/runtime.exs of the release the StatefulSet (statefulset.yaml) runs.
# Without libcluster, start {DynamicSrv.Cluster, <the same config list>} in your supervisor.
import Config

config :libcluster,
  topologies: [
    app: [
      strategy: Cluster.Strategy.DynamicSrv,
      config: [
        # _<port name>._tcp.<service>.<namespace>.svc.cluster.local, written in full: the pod's
        # resolv.conf search list applies to single labels only, a name with a dot is asked
        # as written (so "_dist._tcp.my-app" would not be found, and ndots:5 costs no extra
        # queries). resolv.conf's timeout/attempts options are not used either:
        # DYNAMIC_SRV_LOOKUP_TIMEOUT_MS is.
        service: "_dist._tcp.my-app.default.svc.cluster.local",
        # app@<SRV target>: app@my-app-0.my-app.default.svc.cluster.local, the RELEASE_NODE
        # statefulset.yaml gives each pod.
        node_naming: {:basename, "app"}
      ]
    ]
  ]
