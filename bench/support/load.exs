# Loads the benchmark support modules in dependency order. The modules that must run inside
# the nodes the benchmarks boot (DynamicSrv.Bench.Agent, ClassicEpmd, ClassicPoller) live in
# test/support/ instead, so MIX_ENV=test compiles them into the ebin those nodes load.
for file <- ~w(os stats dns local peer stock_epmd latency large_answer safety concurrency
               cluster_run cluster_results footprint consul cache scale report) do
  Code.require_file("#{file}.ex", __DIR__)
end
