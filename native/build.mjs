// placeholder until the native build lands
