"""The fleet server: releases, MQTT desired state, rollouts and experiments."""
