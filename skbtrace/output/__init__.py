"""Everything that turns an event into a line: the formatters and their fast
path, the sink (stdout or -o FILE), the clock, the --json record identity."""
