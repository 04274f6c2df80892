# Integration tests boot real BEAM nodes and a real dnsmasq; `mix test --exclude integration`
# runs only the unit tests.
ExUnit.start(capture_log: true)
