"""Training support: synthetic degradations of clean photographs (`degrade`)."""
