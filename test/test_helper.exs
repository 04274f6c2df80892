# Long fault variants (`@tag :slow`) run only from ./scripts/chaos (`--include slow`).
ExUnit.start(capture_log: true, exclude: [:slow])
