from services.credit_notes.storage import metadata
from shared.migrations import run_env

run_env(metadata)
