"""Training the bundled networks (`trainer`); the degradations it learns from live in
`mprnet_cli.degradations`."""
