//! The built-in Entra ID + Foundry emulator (being written).
