"""The publisher: sends the bank to Venus OS over D-Bus and to inverters over a CAN-bus BMS port."""
