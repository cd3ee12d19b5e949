//! The YAML model (Dex schema + lanyard extensions). (Being written.)
