package io.kvmarket.registry;

import io.kvmarket.testkit.RegistryContractTest;
class InProcessRegistryTest extends RegistryContractTest {

    @Override
    protected OfferRegistry create() {
        return new InProcessRegistry(clock::get);
    }
}
