"""Facts about the machine mprnet runs on: cache locations (`paths`), devices, precisions and
memory (`device`, the one module here that imports torch), and the standard streams
(`stdio`)."""
