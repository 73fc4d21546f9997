"""`mprnet eval`: restoring benchmark pairs (`evaluate`) and scoring them (`metrics`)."""
