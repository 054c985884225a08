# Makes bpf/ the skbtrace.bpf package in the wheel (see setup.cfg), so the C
# sources travel with the Python code. Nothing to import here.
